/**
 * The fault suite (issue #7 "Hardening"): what the relay does when the things around it fail, on
 * loopback, against real peers: Go x/crypto gateway peers, Node TLS clients dialing like the
 * backend, and the relay as an `infisical relay start` subprocess (its RSS, sockets, /metrics and
 * /readyz are what an operator sees). Every case and every wait is bounded.
 *
 * 1. a gateway SIGKILLed mid-transfer;
 * 2. a gateway frozen (SIGSTOP) with sessions open, replaced by its own reconnect;
 * 3. the control plane down for the whole test (heartbeats and renewals fail);
 * 4. port scans and garbage on both ports;
 * 5. a client that never reads while its gateway sends 64 MiB.
 */
import { createHash, randomBytes } from "node:crypto"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { STALE_CHECK_MS } from "../../src/relay/SshListener.ts"
import { type PeerProcess, readAll, sourceStreamBytes } from "../support/goPeers.ts"
import {
  captureClientHello,
  closedWithin,
  echoRoundTrip,
  eventuallyAsync,
  gatewayStats,
  median,
  MiB,
  pooled,
  probe,
  type ProbeResult,
  mallocHeapOf,
  rssOf,
  scrape,
  socketCount,
  socketStates,
  statusGet
} from "../support/faults.ts"
import { freePort, type Harness, startHarness } from "../support/relayHarness.ts"

/** The SSH channel window of the relay (src/ssh/connection.ts DEFAULT_WINDOW_SIZE). */
const WINDOW = 8 * MiB

/** Processes a test froze with SIGSTOP: thawed afterwards so that they can be killed. */
const frozen = new Set<PeerProcess>()
const freeze = (peer: PeerProcess) => {
  process.kill(peer.child.pid!, "SIGSTOP")
  frozen.add(peer)
}
const thaw = (peer: PeerProcess) => {
  if (frozen.delete(peer) && peer.child.exitCode === null && peer.child.signalCode === null) process.kill(peer.child.pid!, "SIGCONT")
}

/** A relay subprocess with a status server, and readers of what it reports. */
const startObservedRelay = async (relayArgs: ReadonlyArray<string> = []) => {
  const statusPort = await freePort()
  const h = await startHarness({ subprocess: true, relayArgs: [`--status-addr=127.0.0.1:${statusPort}`, ...relayArgs] })
  const pid = h.relayProcess!.child.pid!
  const gauges = async () => {
    const m = await scrape(statusPort)
    return { tunnels: m("relay_tunnels_connected"), sessions: m("relay_sessions_active") }
  }
  const gaugesAt = async (tunnels: number, sessions: number, timeoutMs = 10_000) => {
    let last = { tunnels: -1, sessions: -1 }
    try {
      return await eventuallyAsync(async () => {
        last = await gauges()
        return last.tunnels === tunnels && last.sessions === sessions
      }, `gauges tunnels=${tunnels} sessions=${sessions}`, timeoutMs)
    } catch (e) {
      throw new Error(`${(e as Error).message} (last seen ${JSON.stringify(last)})`)
    }
  }
  const alive = () => h.relayProcess!.child.exitCode === null && h.relayProcess!.child.signalCode === null
  return { h, pid, statusPort, gauges, gaugesAt, alive }
}

/** A session that receives until it is closed; counts what arrived. */
const receivingSession = async (h: Harness, gatewayId: string) => {
  const socket = await h.dialRelay(gatewayId)
  const state = { received: 0 }
  socket.on("data", (c: Buffer) => (state.received += c.length))
  socket.on("error", () => {})
  return { socket, state }
}

/** One short echo session: what we send comes back, then both sides end. */
const echoSession = async (h: Harness, gatewayId: string, message: string): Promise<void> => {
  const socket = await h.dialRelay(gatewayId)
  const back = readAll(socket)
  socket.end(message)
  expect((await back).toString()).toBe(message)
}

/** Warm the relay's code paths up (JIT, first-session allocations) with a few small sessions, then
 *  take that gateway away again. */
const warmUp = async (h: Harness) => {
  const small = await h.quickGateway(`source:${MiB}`)
  for (let i = 0; i < 3; i++) expect((await readAll(await h.dialRelay(small.gatewayId))).length).toBe(MiB)
  await small.peer.kill("SIGKILL")
}

/** What the relay holds: RSS (what the host sees) and JS-owned memory (its V8 heap in use plus its
 *  Buffers, from /metrics: what the relay's own objects keep alive); and how many idle
 *  collections it has run. */
const holdingOf = async (r: { pid: number; statusPort: number }) => {
  const m = await scrape(r.statusPort)
  return {
    rss: rssOf(r.pid),
    js: m("relay_process_heap_used_bytes") + m("relay_process_buffer_bytes"),
    collections: m("relay_idle_collections_total")
  }
}

/**
 * After a case: what it held is released. JS-owned memory must come back to the baseline, so a
 * session, channel or window kept alive by anything fails this; garbage only makes a reading
 * higher, so a reading within the bound is enough, whether V8 collected on its own or the relay's
 * idle collection did (5-10 s after it goes quiet: src/runtime/IdleGc.ts; counted in the log
 * line). (The baseline may hold some garbage itself: this errs lenient by what the warm-up left.) RSS need
 * not come all the way back: glibc keeps freed pages in the middle of its heap for reuse (it
 * returns memory only from the top, and Node cannot call malloc_trim), so RSS is held to the bound
 * the incident itself had. Polled once a second (a scrape costs the relay CPU, and the idle
 * collection waits for an idle relay), bounded; returns the lowest of each seen.
 */
const settles = async (
  r: { pid: number; statusPort: number },
  baseline: { rss: number; js: number },
  tolerance: { rss: number; js: number },
  collectionsAtRelease: number
) => {
  const lowest = { rss: Number.POSITIVE_INFINITY, js: Number.POSITIVE_INFINITY, collections: 0 }
  try {
    await eventuallyAsync(async () => {
      const now = await holdingOf(r)
      lowest.collections = now.collections - collectionsAtRelease
      lowest.rss = Math.min(lowest.rss, now.rss)
      lowest.js = Math.min(lowest.js, now.js)
      return lowest.js <= baseline.js + tolerance.js && lowest.rss <= baseline.rss + tolerance.rss
    }, "relay memory to come back", SETTLE_MS, 1_000)
  } catch {
    // reported through the caller's expectations, with the numbers
  }
  return { ...lowest, mallocHeap: mallocHeapOf(r.pid) }
}

/** Released: the relay's own objects back to within half a window; RSS within the bound a stalled
 *  session's memory has (case 5), the allocator's kept pages included. */
const RELEASE_TOLERANCE = { js: WINDOW / 2, rss: 5 * WINDOW }

/** How long memory may take to come back: the idle collection runs 5-10 s after the relay goes quiet. */
const SETTLE_MS = 60_000

const fmt = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`

/** The settle expectations, with every number in the message. */
const expectReleased = (
  settled: { rss: number; js: number },
  baseline: { rss: number; js: number },
  tolerance: { rss: number; js: number }
) => {
  expect(settled.js, `relay heap+Buffers ${fmt(settled.js)} > baseline ${fmt(baseline.js)} + ${fmt(tolerance.js)} after ${SETTLE_MS} ms`)
    .toBeLessThanOrEqual(baseline.js + tolerance.js)
  expect(settled.rss, `relay RSS ${fmt(settled.rss)} > baseline ${fmt(baseline.rss)} + ${fmt(tolerance.rss)} after ${SETTLE_MS} ms`)
    .toBeLessThanOrEqual(baseline.rss + tolerance.rss)
}


/** Nothing, or nothing but plaintext TLS alert records (type 21, two-byte body): no application byte. */
const onlyTlsAlerts = (bytes: Buffer): boolean => {
  for (let at = 0; at < bytes.length; at += 7) {
    const record = bytes.subarray(at, at + 7)
    if (record.length < 7 || record[0] !== 21 || record[1] !== 3 || record.readUInt16BE(3) !== 2) return false
  }
  return true
}

describe("faults against a relay subprocess", () => {
  let r: Awaited<ReturnType<typeof startObservedRelay>>
  beforeAll(async () => {
    r = await startObservedRelay()
  }, 90_000)
  afterAll(() => r?.h.close())
  afterEach(async () => {
    for (const p of frozen) thaw(p)
    await r.h.peers.killAll()
    // Every case starts from an empty relay.
    await r.gaugesAt(0, 0, 15_000)
  }, 30_000)

  it("1. a gateway SIGKILLed mid-transfer: the client is closed promptly, gauges and RSS come back, the gateway reconnects and serves", async () => {
    await warmUp(r.h)
    await r.gaugesAt(0, 0)
    const baseline = await holdingOf(r)

    const gw = await r.h.quickGateway(`source:${1024 * MiB}`)
    const { socket, state } = await receivingSession(r.h, gw.gatewayId)
    await eventuallyAsync(() => state.received >= 32 * MiB, "32 MiB through the session", 30_000, 20)
    expect(await r.gauges()).toEqual({ tunnels: 1, sessions: 1 })
    const peak = rssOf(r.pid)

    const { collections } = await holdingOf(r)
    const killedAt = Date.now()
    const closed = closedWithin(socket, 5_000, "the client of the killed gateway")
    await gw.peer.kill("SIGKILL")
    const closeMs = await closed
    expect(state.received).toBeLessThan(1024 * MiB)
    await r.gaugesAt(0, 0, 5_000)
    const gaugesMs = Date.now() - killedAt

    // The same gateway (same certificate, same id) connects again at once and serves.
    const again = await r.h.spawnPeer(gw.files, "echo", {}, "killed-gw-2")
    await again.waitForLine(/^READY/, { timeoutMs: 10_000 })
    await echoSession(r.h, gw.gatewayId, "back again")
    const servingMs = Date.now() - killedAt
    expect(await r.gauges()).toEqual({ tunnels: 1, sessions: 0 })

    // What the transfer held is given back: the dead Buffers of the transfer (up to V8's 64 MiB of
    // external-memory slack) go at the relay's idle collection; RSS within what the transfer took.
    const tolerance = RELEASE_TOLERANCE
    const settled = await settles(r, baseline, tolerance, collections)
    console.log(
      `gateway SIGKILL: client closed ${closeMs} ms after the kill, gauges 0 after ${gaugesMs} ms, ` +
        `reconnected gateway served after ${servingMs} ms; relay RSS baseline ${fmt(baseline.rss)}, during ${fmt(peak)}, ` +
        `settled ${fmt(settled.rss)} (malloc heap ${fmt(settled.mallocHeap)}); heap+Buffers ${fmt(baseline.js)} -> ${fmt(settled.js)} after ${settled.collections} idle collection(s)`
    )
    expect(closeMs).toBeLessThan(5_000)
    expectReleased(settled, baseline, tolerance)
  }, 150_000)

  it("2. a frozen gateway with sessions open is replaced by its reconnect: its sessions close, new ones use the new tunnel, thawing it breaks nothing", async () => {
    const gw = await r.h.quickGateway("echo")
    // Two idle sessions and one uploading into the gateway (it stops reading once frozen).
    const idle = await Promise.all([r.h.dialRelay(gw.gatewayId), r.h.dialRelay(gw.gatewayId)])
    for (const [i, s] of idle.entries()) await echoRoundTrip(s, `idle ${i}`)
    const uploader = await r.h.dialRelay(gw.gatewayId)
    uploader.on("data", () => {}) // reads the echo so the gateway keeps going until frozen
    uploader.on("error", () => {})
    let uploading = true
    const upload = (async () => {
      const chunk = randomBytes(64 * 1024)
      while (uploading && !uploader.destroyed) {
        if (!uploader.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              uploader.off("drain", done)
              uploader.off("close", done)
              resolve()
            }
            uploader.on("drain", done)
            uploader.on("close", done)
          })
        }
      }
    })()
    const onFrozen = [...idle, uploader]
    for (const s of idle) s.on("error", () => {})
    await r.gaugesAt(1, 3, 5_000)

    freeze(gw.peer)
    const fresh = await r.h.spawnPeer(gw.files, "echo", {}, "frozen-gw-2")
    const closes = onFrozen.map((s, i) => closedWithin(s, STALE_CHECK_MS + 10_000, `session ${i} on the frozen tunnel`))
    await fresh.waitForLine(/^READY/, { timeoutMs: 10_000 })
    const readyAt = Date.now()
    // A session dialed while the relay is still checking the old tunnel goes to the frozen one: it
    // must end (refused or closed), not hang.
    const during = await r.h.dialRelay(gw.gatewayId)
    during.on("error", () => {})
    const duringBytes = readAll(during).catch(() => Buffer.alloc(0))
    const duringClosed = closedWithin(during, STALE_CHECK_MS + 15_000, "the session dialed during the stale check")

    const closeMs = await Promise.all(closes)
    const replacedMs = Date.now() - readyAt
    uploading = false
    await upload
    await duringClosed
    expect((await duringBytes).length).toBe(0)
    // Replaced within the stale check (READY reaches us a moment after the relay started it).
    expect(replacedMs).toBeLessThan(STALE_CHECK_MS + 5_000)
    await r.gaugesAt(1, 0, 5_000)

    // New sessions go through the new connection.
    const live = await r.h.dialRelay(gw.gatewayId)
    await echoRoundTrip(live, "through the new tunnel")
    expect(fresh.lines.filter((l) => l.startsWith("CHANNEL "))).toHaveLength(1)

    // Thaw the old process: it finds its connection gone and leaves; nothing else changes.
    const oldChannels = gw.peer.lines.filter((l) => l.startsWith("CHANNEL ")).length
    thaw(gw.peer)
    await gw.peer.waitForLine(/^CLOSED /, { timeoutMs: 10_000 })
    await echoRoundTrip(live, "still flowing after the thaw")
    await echoSession(r.h, gw.gatewayId, "and a new one")
    expect(fresh.lines.some((l) => l.startsWith("CLOSED"))).toBe(false)
    expect(gw.peer.lines.filter((l) => l.startsWith("CHANNEL ")).length).toBe(oldChannels)
    expect(fresh.lines.filter((l) => l.startsWith("CHANNEL "))).toHaveLength(2)
    live.end()
    await closedWithin(live, 5_000, "the live session")
    await r.gaugesAt(1, 0)
    console.log(
      `frozen gateway: its 3 sessions closed ${Math.max(...closeMs)} ms after the reconnect began, ` +
        `replacement ${replacedMs} ms after READY (STALE_CHECK_MS ${STALE_CHECK_MS})`
    )
  }, 90_000)

  it("4. port scans and garbage on both ports: zero bytes from the TLS port, at most the version line from the SSH port; the relay stays up and serves", async () => {
    const gw = await r.h.quickGateway("echo")
    const good = await r.h.dialRelay(gw.gatewayId)
    await echoRoundTrip(good, "before")
    const baselineSockets = socketCount(r.pid)
    const baselineStates = socketStates(r.pid)
    /** Accepted connections (not listeners) on the relay's SSH and TLS ports, sorted. */
    const onRelayPorts = (states: ReadonlyArray<string>) =>
      states.filter((l) => !l.startsWith("LISTEN") && [r.h.sshPort, r.h.tlsPort].some((p) => l.split(" ")[1]!.endsWith(`:${p}`))).sort()
    const clientHello = await captureClientHello()
    const sshBanner = Buffer.from("SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n")
    const http = Buffer.from("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: scanner\r\n\r\n")
    const seed = randomBytes(4).readUInt32BE(0)
    let rng = seed
    const nextSize = () => {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0
      return 1 + (rng % (64 * 1024))
    }
    const garbage = Array.from({ length: 20 }, () => randomBytes(nextSize()))

    // What each port gets; "hold" reads until the relay closes (its handshake deadlines: TLS 5 s,
    // SSH authentication 30 s), bounded.
    const HOLD_MS = 45_000
    const attacks = (port: number, foreign: Buffer) => [
      ...garbage.map((send) => ({ what: `${send.length} random bytes`, send, then: "hold" as const })),
      { what: "an HTTP GET", send: http, then: "hold" as const },
      { what: "a foreign handshake", send: foreign, then: "hold" as const },
      { what: "silence (half-open, never writes)", send: Buffer.alloc(0), then: "hold" as const },
      { what: "half a ClientHello, then silence", send: clientHello.subarray(0, 7), then: "hold" as const },
      { what: "a bare FIN", send: Buffer.alloc(0), then: "half-close" as const },
      { what: "a few bytes then FIN", send: clientHello.subarray(0, 20), then: "half-close" as const }
    ].map((a) => ({ ...a, port }))
    const all = [...attacks(r.h.tlsPort, sshBanner), ...attacks(r.h.sshPort, clientHello)]

    // The good session keeps echoing, and new sessions keep opening, while the ports are flooded.
    let flooding = true
    const duringRtts: Array<number> = []
    let duringSessions = 0
    const goodTraffic = (async () => {
      for (let i = 0; flooding; i++) {
        duringRtts.push(await echoRoundTrip(good, `during ${i}`))
        if (i % 10 === 0) {
          await echoSession(r.h, gw.gatewayId, `new session ${i}`)
          duringSessions++
        }
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    })()
    const scans = async (port: number) => {
      await pooled(Array.from({ length: 200 }), 20, () => probe(port, { then: "close", timeoutMs: 5_000 }))
    }
    const [, , results] = await Promise.all([
      scans(r.h.tlsPort),
      scans(r.h.sshPort),
      pooled(all, all.length, async (a) => ({ ...a, result: await probe(a.port, { send: a.send, then: a.then, timeoutMs: HOLD_MS }) }))
    ])
    flooding = false
    await goodTraffic

    const describeResult = (a: { what: string; port: number; result: ProbeResult }) => {
      const text = a.result.received.toString("latin1")
      const versionLine = /^SSH-2\.0-[\x21-\x7e]+( [^\r\n]*)?\r\n/.exec(text)?.[0]
      // What follows a version line: the type of the first binary packet (RFC 4253 §6: byte 5).
      const after = versionLine === undefined ? undefined : a.result.received.subarray(versionLine.length)
      const bytes = versionLine === undefined
        ? `${a.result.received.length} bytes back`
        : `the version line${after!.length > 0 ? ` + ${after!.length} bytes (first packet type ${after![5] ?? "?"})` : ""} back`
      return `${a.port === r.h.tlsPort ? "TLS" : "SSH"} port, ${a.what}: ${bytes}, ${a.result.end} after ${a.result.ms} ms`
    }
    const tlsResults = results.filter((a) => a.port === r.h.tlsPort)
    const sshResults = results.filter((a) => a.port === r.h.sshPort)
    // The TLS port writes nothing to any of them but, at most, TLS's own alert (random bytes that
    // start like a handshake record get OpenSSL's decode_error alert, as Go's server sends one),
    // and closes every one of them.
    expect(tlsResults.filter((a) => !onlyTlsAlerts(a.result.received) || a.result.end !== "closed").map(describeResult).join("\n")).toBe("")
    // The relay stays up, its sockets come back to what they were, and the good session still works.
    expect(r.alive()).toBe(true)
    // Every connection the flood made is gone: the relay's connections on its two ports are the
    // ones from before, and it holds no more sockets than before (fewer if an idle keep-alive
    // connection to the control plane closed meanwhile).
    const socketsMs = await eventuallyAsync(
      () => socketCount(r.pid) <= baselineSockets && onRelayPorts(socketStates(r.pid)).join() === onRelayPorts(baselineStates).join(),
      `relay sockets back to ${baselineSockets}`,
      10_000
    ).catch((e: Error) => {
      throw new Error(`${e.message}: ${socketCount(r.pid)} open; TCP: ${socketStates(r.pid).join("; ")} (before: ${baselineStates.join("; ")})`)
    })
    await echoRoundTrip(good, "after")
    await echoSession(r.h, gw.gatewayId, "a new session after")
    expect(duringSessions).toBeGreaterThan(0)
    console.log(
      `garbage (seed ${seed}): ${results.length} probes + 400 scans; slowest close TLS ${Math.max(...tlsResults.map((a) => a.result.ms))} ms, ` +
        `SSH ${Math.max(...sshResults.map((a) => a.result.ms))} ms; good session echo during: median ${median(duringRtts).toFixed(1)} ms, ` +
        `max ${Math.max(...duringRtts).toFixed(1)} ms over ${duringRtts.length}, ${duringSessions} new sessions; sockets back to ${baselineSockets} after ${socketsMs} ms`
    )
    // The SSH port writes its version line at most, and closes every one of them.
    const versionLineAtMost = (received: Buffer) => received.length === 0 || /^SSH-2\.0-[\x21-\x7e]+( [^\r\n]*)?\r\n$/.test(received.toString("latin1"))
    expect(sshResults.filter((a) => !versionLineAtMost(a.result.received) || a.result.end !== "closed").map(describeResult).join("\n")).toBe("")
    good.end()
  }, 120_000)

  it("5. a client that never reads while its gateway sends 64 MiB: bounded relay memory, the gateway's other sessions flow, all released at disconnect", async () => {
    const SIZE = 64 * MiB
    await warmUp(r.h)
    await r.gaugesAt(0, 0)
    const gw = await r.h.quickGateway(`source:${SIZE}`)

    /** Time to the first byte of a new session to this gateway (TLS handshake + channel open + data). */
    const firstByteMs = async () => {
      const started = performance.now()
      const s = await r.h.dialRelay(gw.gatewayId)
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no first byte within 10 s")), 10_000)
        s.once("data", () => {
          clearTimeout(timer)
          resolve()
        })
      })
      const ms = performance.now() - started
      s.destroy()
      return ms
    }
    await firstByteMs() // the first dial mints the client certificate
    const before: Array<number> = []
    for (let i = 0; i < 5; i++) before.push(await firstByteMs())
    await r.gaugesAt(1, 0)
    await eventuallyAsync(async () => (await gatewayStats(gw.peer)).channelsActive === 0, "the sampling sessions to end", 5_000)
    const sentBefore = (await gatewayStats(gw.peer)).bytesOut
    const baseline = await holdingOf(r)

    // The stalled client: no 'data' listener, its socket stays paused.
    const stalled = await r.h.dialRelay(gw.gatewayId)
    let peak = baseline.rss
    let last = -1
    let still = 0
    for (let i = 0; i < 100 && still < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 150))
      peak = Math.max(peak, rssOf(r.pid))
      const out = (await gatewayStats(gw.peer)).bytesOut
      still = out === last ? still + 1 : 0
      last = out
    }
    expect(still).toBe(3) // the gateway is stopped (its byte count stands still)
    const stalledAfter = last - sentBefore
    const stalledRss = rssOf(r.pid)

    // Other sessions to the same gateway: a new session's first byte as fast as before, and a
    // whole 64 MiB stream through while the stalled one holds its window.
    const during: Array<number> = []
    for (let i = 0; i < 5; i++) during.push(await firstByteMs())
    const flowStarted = performance.now()
    const stream = await r.h.dialRelay(gw.gatewayId)
    const body = await readAll(stream)
    const flowSeconds = (performance.now() - flowStarted) / 1000
    expect(body.length).toBe(SIZE)
    expect(createHash("sha256").update(body).digest("hex")).toBe(createHash("sha256").update(sourceStreamBytes(SIZE)).digest("hex"))
    expect((await gatewayStats(gw.peer)).bytesOut).toBeGreaterThanOrEqual(last + SIZE) // the stalled one is still stalled...
    expect((await r.gauges()).sessions).toBe(1) // ...and still open

    // The stalled client goes away: its session, its channel and its memory are released.
    const { collections } = await holdingOf(r)
    stalled.destroy()
    await r.gaugesAt(1, 0, 5_000)
    await eventuallyAsync(async () => (await gatewayStats(gw.peer)).channelsActive === 0, "the gateway's channels to close", 5_000)
    await gw.peer.kill("SIGKILL")
    await r.gaugesAt(0, 0, 5_000)
    const tolerance = RELEASE_TOLERANCE
    const settled = await settles(r, baseline, tolerance, collections)

    const growth = peak - baseline.rss
    console.log(
      `stalled reader: gateway stopped after ${fmt(stalledAfter)} of ${fmt(SIZE)}; relay RSS baseline ${fmt(baseline.rss)}, peak while stalling ` +
        `${fmt(peak)} (+${fmt(growth)}), stalled ${fmt(stalledRss)}, settled after release ${fmt(settled.rss)} ` +
        `(malloc heap ${fmt(settled.mallocHeap)}); heap+Buffers ${fmt(baseline.js)} -> ${fmt(settled.js)} after ${settled.collections} idle collection(s); ` +
        `first byte of a new session median ${median(before).toFixed(1)} ms before, ${median(during).toFixed(1)} ms during; ` +
        `64 MiB alongside in ${flowSeconds.toFixed(2)} s`
    )
    // The gateway could send one window plus what the sockets on the way hold, not the stream.
    expect(stalledAfter).toBeGreaterThanOrEqual(WINDOW)
    expect(stalledAfter).toBeLessThan(WINDOW + 16 * MiB)
    // Relay memory: the window it holds, plus the ciphertext it arrived in and garbage not yet
    // collected; buffering the stream would cost 64 MiB or more.
    expect(growth).toBeLessThan(5 * WINDOW)
    // Normal latency for the gateway's other sessions (a head-of-line block would time out at 10 s).
    expect(median(during)).toBeLessThan(5 * median(before) + 250)
    expectReleased(settled, baseline, tolerance)
  }, 180_000)
})

describe("control plane down", () => {
  it("3. heartbeats and renewals fail for the whole test; sessions, new gateways and new sessions keep working; /readyz stays ready", async () => {
    // Heartbeats every 500 ms; renewal as often as the relay allows (at least a minute apart:
    // src/Renewal.ts MIN_RENEWAL_GAP), so the window lasts until two renewals have failed.
    const r = await startObservedRelay(["--heartbeat-retry-interval=500ms", "--heartbeat-interval=1s", "--renew-interval=1s"])
    try {
      const gw = await r.h.quickGateway("echo")
      const long = await r.h.dialRelay(gw.gatewayId)
      await echoRoundTrip(long, "before")
      await r.h.stopControlPlane()
      const downAt = Date.now()
      const start = await scrape(r.statusPort)
      const failures = (m: (name: string, labels?: Record<string, string>) => number) => ({
        heartbeat: m("relay_heartbeats_total", { outcome: "failure" }) - start("relay_heartbeats_total", { outcome: "failure" }),
        renewal: m("relay_certificate_renewals_total", { outcome: "failure" }) - start("relay_certificate_renewals_total", { outcome: "failure" })
      })

      let rounds = 0
      let newGateways = 0
      let seen = { heartbeat: 0, renewal: 0 }
      // Bounded: renewal is due a minute after start, then retried after ~1 s, ~2 s.
      while (seen.renewal < 2) {
        if (Date.now() - downAt > 100_000) throw new Error(`renewal failures not seen within 100 s: ${JSON.stringify(seen)}`)
        expect(r.alive()).toBe(true)
        expect(await statusGet(r.statusPort, "/readyz")).toEqual({ status: 200, body: "ready\n" })
        await echoRoundTrip(long, `round ${rounds}`)
        await echoSession(r.h, gw.gatewayId, `new session ${rounds}`)
        if (rounds % 10 === 0) {
          const another = await r.h.quickGateway("echo")
          await echoSession(r.h, another.gatewayId, `new gateway ${newGateways}`)
          await another.peer.kill("SIGTERM")
          newGateways++
        }
        seen = failures(await scrape(r.statusPort))
        rounds++
        await new Promise((resolve) => setTimeout(resolve, 500))
      }
      const windowSeconds = (Date.now() - downAt) / 1000
      expect(seen.heartbeat).toBeGreaterThanOrEqual(5)
      expect(r.h.relayProcess!.output()).toMatch(/Heartbeat failed/)
      expect(r.h.relayProcess!.output()).toMatch(/Failed to renew certificates/)
      expect(r.alive()).toBe(true)
      await echoRoundTrip(long, "after")
      console.log(
        `control plane down ${windowSeconds.toFixed(0)} s: ${seen.heartbeat} heartbeat and ${seen.renewal} renewal failures counted; ` +
          `${rounds} rounds of sessions, ${newGateways} new gateways, /readyz ready throughout`
      )
      long.end()
    } finally {
      await r.h.close()
    }
  }, 150_000)
})
