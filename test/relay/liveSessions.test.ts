/**
 * LiveSessions: what the TLS listener's drain waits for and its shutdown cancels.
 */
import { describe, expect, it } from "vitest"
import { LiveSessions } from "../../src/relay/LiveSessions.ts"

/** A task that ends when `end` is called, and records whether it was cancelled. */
const task = () => {
  const t = { end: (_: string) => {}, cancelled: false }
  const start = (onEnd: (outcome: string) => void) => {
    t.end = onEnd
    return () => void (t.cancelled = true)
  }
  return { t, start }
}

describe("LiveSessions", () => {
  it("tracks a session until it ends, and whenEmpty waits for the last one", async () => {
    const live = new LiveSessions()
    const a = task()
    const b = task()
    const ended: Array<string> = []
    live.run(a.start, (o) => ended.push(o), () => ended.push("cancelled"))
    live.run(b.start, (o) => ended.push(o), () => ended.push("cancelled"))
    expect(live.size).toBe(2)
    let empty = false
    const waiting = live.whenEmpty().then(() => (empty = true))
    a.t.end("a")
    await Promise.resolve()
    expect(empty).toBe(false)
    b.t.end("b")
    await waiting
    expect(ended).toEqual(["a", "b"])
    expect(live.size).toBe(0)
  })

  it("a session that ends while starting is never tracked", async () => {
    const live = new LiveSessions()
    const ended: Array<string> = []
    live.run<string>((onEnd) => {
      onEnd("refused")
      return () => ended.push("cancel called")
    }, (o) => ended.push(o), () => ended.push("cancelled"))
    expect(live.size).toBe(0)
    await live.whenEmpty()
    live.cancelAll()
    expect(ended).toEqual(["refused"])
  })

  it("cancelAll cancels each running session once, reports it as cancelled, and wakes the drain", async () => {
    const live = new LiveSessions()
    const a = task()
    const outcomes: Array<string> = []
    live.run(a.start, (o) => outcomes.push(o), () => outcomes.push("cancelled"))
    const waiting = live.whenEmpty()
    live.cancelAll()
    await waiting
    live.cancelAll()
    expect(a.t.cancelled).toBe(true)
    expect(outcomes).toEqual(["cancelled"])
    expect(live.size).toBe(0)
  })
})
