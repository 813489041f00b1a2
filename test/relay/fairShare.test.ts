import { createHash } from "node:crypto"
import { Duplex } from "node:stream"
import { setImmediate as nextTurn } from "node:timers/promises"
import { Effect, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import { makeFairShare } from "../../src/relay/FairShare.ts"
import { pump } from "../../src/relay/pump.ts"

const KiB = 1024

describe("FairShare lanes", () => {
  it("never throttles an org that is alone on the relay", () => {
    const fair = makeFairShare({ quantumBytes: 64 * KiB })
    const lane = fair.lane("a")
    for (let i = 0; i < 100; i++) expect(lane.charge(64 * KiB)).toBe(true)
  })

  it("throttles an org over its quantum while another org is active, until its debt is paid", async () => {
    let clock = 0
    const fair = makeFairShare({ quantumBytes: 64 * KiB, activeWindowMs: 100, now: () => clock })
    const a = fair.lane("a")
    const b = fair.lane("b")
    expect(b.charge(1)).toBe(true)
    expect(a.charge(64 * KiB)).toBe(true)
    expect(a.charge(1)).toBe(false)
    let reopened = false
    a.whenOpen(() => {
      reopened = true
    })
    expect(reopened).toBe(false)
    await nextTurn()
    expect(reopened).toBe(true)
    // b moved bytes 50 ms ago: still competing, so a is still held to its quantum.
    clock = 50
    expect(a.charge(64 * KiB + 1)).toBe(false)
    // b quiet for longer than the window: a runs free again.
    clock = 200
    expect(a.charge(10 * 64 * KiB)).toBe(true)
  })

  it("shares a lane between an org's sessions and forgets it when the last one ends", () => {
    const fair = makeFairShare()
    const one = fair.lane("a")
    const two = fair.lane("a")
    fair.lane("b").release()
    expect(fair.orgs()).toBe(1)
    one.release()
    one.release()
    expect(fair.orgs()).toBe(1)
    two.release()
    expect(fair.orgs()).toBe(0)
  })
})

/** A gateway side that, like a socket, delivers one chunk per event-loop turn, and discards what it is sent. */
const endlessSource = () => {
  const chunk = Buffer.alloc(16 * KiB, 7)
  return new Duplex({
    read() {
      setImmediate(() => this.push(chunk))
    },
    write(_chunk, _encoding, callback) {
      callback()
    }
  })
}

/**
 * A client side that counts what reaches it; like a TLS socket it costs CPU per byte at write time
 * (a hash stands in for the record encryption), so bytes one org moves lengthen every turn. Its
 * readable side is silent.
 */
const countingSink = () => {
  const sink = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      createHash("sha256").update(chunk).digest()
      sink.received += chunk.length
      callback()
    }
  }) as Duplex & { received: number }
  sink.received = 0
  return sink
}

/** Run org a with 8 bulk sessions against org b with 1 for 300 ms; the bytes each org received. */
const race = async (fair: ReturnType<typeof makeFairShare> | undefined) => {
  const sessions = [...Array(8).fill("a"), "b"].map((org: string) => {
    const sink = countingSink()
    const fiber = Effect.runFork(pump(sink, endlessSource(), { org, ...(fair ? { fairShare: fair } : {}) }))
    return { org, sink, fiber }
  })
  await new Promise((resolve) => setTimeout(resolve, 300))
  await Promise.all(sessions.map((s) => Effect.runPromise(Fiber.interrupt(s.fiber))))
  const total = (org: string) => sessions.filter((s) => s.org === org).reduce((n, s) => n + s.sink.received, 0)
  return { a: total("a"), b: total("b") }
}

describe("pump with fair sharing", () => {
  it("shares bandwidth per org, not per session: one session gets what eight of another org get", async () => {
    const unfair = await race(undefined)
    // A quantum of one chunk per turn: each org may move one chunk per turn while both are busy.
    const fair = await race(makeFairShare({ quantumBytes: 16 * KiB }))
    // First come, first served: per-session shares, so org a gets ~8x org b.
    expect(unfair.a / unfair.b).toBeGreaterThan(4)
    // Fair: per-org shares, about equal, and org a still moves data. (What that buys org b in
    // latency on a real relay is measured by `npm run load`, docs/load.md.)
    expect(fair.a / fair.b).toBeLessThan(2)
    expect(fair.a).toBeGreaterThan(0)
  })

  it("closes a session idle for longer than the idle timeout, and not before", async () => {
    const silent = () => new Duplex({ read() {}, write(_c, _e, cb) { cb() } })
    const started = Date.now()
    const result = await Effect.runPromise(pump(silent(), silent(), { idleTimeoutMs: 200 }))
    expect(result.reason).toBe("idle-timeout")
    expect(Date.now() - started).toBeGreaterThanOrEqual(190)
  })
})

describe("pump start-up", () => {
  it("ends at once when the gateway's channel died before the pump started", async () => {
    const silent = () => new Duplex({ read() {}, write(_c, _e, cb) { cb() } })
    const client = silent()
    const gateway = silent()
    gateway.destroy()
    await new Promise((resolve) => setImmediate(resolve)) // its 'close' is emitted before the pump listens
    const result = await Effect.runPromise(pump(client, gateway))
    expect(result.reason).toBe("gateway-closed")
    expect(client.destroyed).toBe(true)
  })
})
