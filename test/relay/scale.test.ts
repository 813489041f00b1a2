/**
 * The data plane at size (checklist 33, 36 at scale): 256 MiB each way at once through one session
 * with matching SHA-256s, 1,000 concurrent sessions across 100 Go gateway processes, and
 * backpressure: a client that stops reading while the gateway sources data must stop the gateway
 * (SSH channel window) instead of growing the relay's memory. That bound is the 8 MiB channel
 * window plus socket buffers (kernel memory); it is measured twice: with the relay as a real
 * `infisical relay start` subprocess (its RSS from /proc: what an operator sees, garbage not yet
 * collected included), and in-process, where a forced GC shows the bytes the relay really holds
 * (process.memoryUsage().arrayBuffers).
 */
import * as fs from "node:fs"
import { createCipheriv, createHash } from "node:crypto"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import type * as tls from "node:tls"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { sessionsActive } from "../../src/observability/Metrics.ts"
import { type PeerProcess, sourceStreamBytes } from "../support/goPeers.ts"
import { eventually, type Gateway, type Harness, metricTotal, metricValue, startHarness } from "../support/relayHarness.ts"

let h: Harness
/** The relay as a subprocess, for the RSS measurement. */
let sub: Harness
beforeAll(async () => {
  ;[h, sub] = await Promise.all([startHarness(), startHarness({ subprocess: true })])
})
afterAll(() => Promise.all([h?.close(), sub?.close()]))

const MiB = 1024 * 1024
const WINDOW = 8 * MiB
/** What the slow reader's gateway sources. */
const SIZE = 64 * MiB

/** An AES-128-CTR keystream generator (zero IV), chunk by chunk: cheap deterministic bytes. */
const keystream = (keyByte: number) => {
  const cipher = createCipheriv("aes-128-ctr", Buffer.alloc(16, keyByte), Buffer.alloc(16))
  return (n: number) => cipher.update(Buffer.alloc(n))
}

/** Runs `work` over `items` with at most `limit` in flight. */
const pooled = async <A, B>(items: ReadonlyArray<A>, limit: number, work: (a: A, i: number) => Promise<B>): Promise<Array<B>> => {
  const out: Array<B> = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await work(items[i]!, i)
    }
  }))
  return out
}

describe("the data plane at scale", () => {
  it("256 MiB each way at once through one session, SHA-256 equal at both ends", async () => {
    const size = 256 * MiB
    const gw = await h.quickGateway(`duplex:${size}`)
    const socket = await h.dialRelay(gw.gatewayId)
    const started = Date.now()

    // Download: the gateway's source stream, then "<bytes it read> <their sha256>\n".
    const expectedDown = createHash("sha256")
    const expectDown = keystream(0)
    for (let left = size; left > 0; left -= 4 * MiB) expectedDown.update(expectDown(Math.min(4 * MiB, left)))
    const down = new Promise<{ sha: string; trailer: string }>((resolve, reject) => {
      const hash = createHash("sha256")
      let got = 0
      const tail: Array<Buffer> = []
      socket.on("data", (chunk: Buffer) => {
        const body = Math.max(0, Math.min(chunk.length, size - got))
        if (body > 0) hash.update(chunk.subarray(0, body))
        if (body < chunk.length) tail.push(chunk.subarray(body))
        got += chunk.length
      })
      socket.once("end", () => resolve({ sha: hash.digest("hex"), trailer: Buffer.concat(tail).toString() }))
      socket.once("error", reject)
    })

    // Upload: another keystream, with backpressure, then EOF.
    const sentHash = createHash("sha256")
    const next = keystream(1)
    for (let left = size; left > 0; left -= MiB) {
      const chunk = next(Math.min(MiB, left))
      sentHash.update(chunk)
      if (!socket.write(chunk)) await new Promise((resolve) => socket.once("drain", resolve))
    }
    socket.end()

    const { sha, trailer } = await down
    const seconds = (Date.now() - started) / 1000
    expect(sha).toBe(expectedDown.digest("hex"))
    expect(trailer).toBe(`${size} ${sentHash.digest("hex")}\n`)
    console.log(`256 MiB each way through one session: ${seconds.toFixed(1)} s (${((2 * size) / MiB / seconds).toFixed(0)} MiB/s both directions)`)
    // The relay counts a session's bytes once its side has ended, which can be just after ours.
    await eventually(
      () => metricTotal("relay_session_bytes_total", { direction: "client_to_gateway" }) >= size,
      "the session's bytes counted"
    )
  }, 120_000)

  it("1,000 concurrent sessions across 100 gateway processes", async () => {
    await eventually(() => metricValue(sessionsActive) === 0, "earlier sessions to be over")
    const started = Date.now()
    const gateways: Array<Gateway> = await pooled(Array.from({ length: 100 }), 25, () => h.quickGateway("echo"))
    const gatewaysUp = Date.now()
    // Client certificates: one per gateway, reused by its ten sessions.
    await Promise.all(gateways.map((g) => h.clientCredentials(g.gatewayId)))

    const targets = Array.from({ length: 1000 }, (_, i) => gateways[i % 100]!)
    // Open all 1,000 (at most 64 handshakes in flight) and keep them open: each proves it is
    // routed with an echo, then waits for the others.
    const sessions = await pooled(targets, 64, async (g, i) => {
      const socket = await h.dialRelay(g.gatewayId)
      const hello = `hello ${i} ${sourceStreamBytes(32 + (i % 7)).toString("hex")}`
      const echoed = await new Promise<string>((resolve, reject) => {
        let text = ""
        const onData = (c: Buffer) => {
          text += c.toString()
          if (text.length >= hello.length) {
            socket.off("data", onData)
            resolve(text)
          }
        }
        socket.on("data", onData)
        socket.once("error", reject)
        socket.write(hello)
      })
      expect(echoed).toBe(hello)
      return socket
    })
    const allOpen = Date.now()
    expect(metricValue(sessionsActive)).toBe(1000)

    // Then close them all, each cleanly: client EOF -> channel EOF -> echo's EOF -> end.
    await Promise.all(sessions.map((s: tls.TLSSocket) => new Promise<void>((resolve) => {
      s.once("close", () => resolve())
      s.resume()
      s.end()
    })))
    const done = Date.now()
    for (const g of gateways) {
      await g.peer.waitForLine(/^CHANNEL_DONE 10 /)
      expect(g.peer.lines.filter((l) => l.startsWith("CHANNEL ")).length).toBe(10)
    }
    console.log(
      `100 gateways up in ${((gatewaysUp - started) / 1000).toFixed(1)} s; 1,000 sessions opened in ${((allOpen - gatewaysUp) / 1000).toFixed(1)} s, closed in ${((done - allOpen) / 1000).toFixed(1)} s`
    )
    expect(done - started).toBeLessThan(60_000)
  }, 120_000)
})

/** Resident set size of a process, from /proc/<pid>/status (kB -> bytes). */
const rss = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
  if (!m) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1]) * 1024
}

/** A full GC in this process (V8's gc() made reachable at run time). */
const gc = (): void => {
  v8.setFlagsFromString("--expose-gc")
  ;(vm.runInNewContext("gc") as () => void)()
}

/** The gateway's counters: SIGUSR1 makes it print a STATS line; waits for that line. */
const gatewayStats = async (peer: PeerProcess): Promise<{ bytesOut: number }> => {
  const from = peer.lines.length
  peer.child.kill("SIGUSR1")
  const m = await peer.waitForLine(/^STATS (.*)$/, { fromLine: from, timeoutMs: 5_000 })
  return JSON.parse(m[1]!) as { bytesOut: number }
}

/** Warm the code paths (JIT, first-session allocations) up with a few small sessions. */
const warmUp = async (h: Harness) => {
  const small = await h.quickGateway(`source:${MiB}`)
  for (let i = 0; i < 3; i++) {
    const s = await h.dialRelay(small.gatewayId)
    await new Promise<void>((resolve) => s.on("data", () => {}).once("end", () => resolve()))
  }
}

/**
 * Connect a client that never reads (no 'data' listener: the socket stays paused) to a gateway
 * sourcing SIZE bytes; returns once the gateway is stalled (its byte count stops moving; bounded),
 * with what it sent. `sample` runs at every check.
 */
const stalledSession = async (h: Harness, sample: () => void) => {
  const gw = await h.quickGateway(`source:${SIZE}`)
  const socket = await h.dialRelay(gw.gatewayId)
  let last = -1
  let still = 0
  for (let i = 0; i < 100 && still < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 150))
    sample()
    const out = (await gatewayStats(gw.peer)).bytesOut
    still = out === last ? still + 1 : 0
    last = out
  }
  expect(still).toBe(3)
  return { socket, sent: last }
}

/** Reading resumes: every byte of the gateway's stream arrives, in order. */
const drainAndVerify = async (socket: tls.TLSSocket) => {
  const expected = createCipheriv("aes-128-ctr", Buffer.alloc(16), Buffer.alloc(16))
  const want = createHash("sha256")
  for (let left = SIZE; left > 0; left -= 4 * MiB) want.update(expected.update(Buffer.alloc(Math.min(4 * MiB, left))))
  const got = createHash("sha256")
  let n = 0
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (c: Buffer) => {
      n += c.length
      got.update(c)
    })
    socket.once("end", () => resolve())
    socket.once("error", reject)
  })
  expect(n).toBe(SIZE)
  expect(got.digest("hex")).toBe(want.digest("hex"))
}

describe("a slow reader", () => {
  it("stops the gateway at about one window; the relay subprocess's RSS stays bounded", async () => {
    const pid = sub.relayProcess!.child.pid!
    await warmUp(sub)
    const baseline = rss(pid)
    let peak = baseline
    const { socket, sent } = await stalledSession(sub, () => (peak = Math.max(peak, rss(pid))))
    const growth = peak - baseline
    console.log(
      `slow reader (relay subprocess): gateway stalled after ${(sent / MiB).toFixed(1)} MiB of ${SIZE / MiB} MiB; ` +
        `relay RSS ${(baseline / MiB).toFixed(0)} MiB -> peak ${(peak / MiB).toFixed(0)} MiB (+${(growth / MiB).toFixed(1)} MiB)`
    )
    // The gateway could send the window plus what the sockets on the way hold, not the stream.
    expect(sent).toBeGreaterThanOrEqual(WINDOW)
    expect(sent).toBeLessThan(WINDOW + 16 * MiB)
    // RSS: the window held, plus the ciphertext it arrived in and other garbage not yet collected
    // (varies with GC timing: +2 to +30 MiB seen). Buffering the stream would hold its 64 MiB
    // twice over (ciphertext and plaintext).
    expect(growth).toBeLessThan(6 * WINDOW)
    await drainAndVerify(socket)
  }, 120_000)

  it("in-process: the gateway stops at about one window and the stream still arrives intact", async () => {
    await warmUp(h)
    gc()
    const baseline = process.memoryUsage().arrayBuffers
    const { socket, sent } = await stalledSession(h, () => {})
    gc()
    const held = process.memoryUsage().arrayBuffers - baseline
    console.log(`slow reader (in-process): gateway stalled after ${(sent / MiB).toFixed(1)} MiB; buffers held after GC +${(held / MiB).toFixed(1)} MiB`)
    // The gateway can only have sent the window plus what the sockets on the way hold: that is
    // what bounds the relay. `held` is process-wide (relay, control plane and test client share
    // this process), so it is reported, not asserted: +8 MiB on a quiet machine, up to ~30 MiB
    // seen under load. The subprocess test above bounds the relay's own RSS.
    expect(sent).toBeLessThan(WINDOW + 16 * MiB)
    await drainAndVerify(socket)
  }, 120_000)
})
