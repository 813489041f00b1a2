/**
 * The soak: moderate load on our relay for a while, watching for growth that load alone does not
 * explain. Shared by `npm run soak` (bench/soak.ts, minutes) and its CI version
 * (test/relay/soak.test.ts, under a minute).
 *
 * Load: `tunnels` gateway tunnels over `gatewayProcs` Go gateway processes; a steady churn of
 * sessions (open, 64-byte echo, close) spread over the tunnels; a few long bulk downloads paced
 * by a slow reader (so the relay's flow control holds the gateway back all along); every
 * `reconnectEverySeconds` one gateway process (never the bulk sessions' one) is stopped and started
 * again with the same certificates, so its tunnels drop and register again.
 *
 * Samples the relay's RSS and fd count (/proc), active sessions and tunnels (/metrics; heap too
 * if /metrics has a heap gauge) every `sampleEverySeconds`. Verdict, checked after the load stops:
 * - RSS: the least-squares slope of the second half of the samples (the first half is warm-up:
 *   V8 grows its heap to a working size) within `maxRssSlopeMiBPerMinute`;
 * - fds: back within `fdSlack` of the count before the load started (tunnels up, no sessions);
 * - sessions: none active once the clients are gone; no session failed except those cut by a
 *   gateway restart.
 */
import { performance } from "node:perf_hooks"
import type * as tls from "node:tls"
import type { LoadMaterial } from "./loadMaterial.ts"
import { fdCount, optionalFlags, type RelayRunner, relayStartHelp, startLoadRelay } from "./loadRelay.ts"
import { download, openEchoSession, roundTrip } from "./loadSessions.ts"
import { rssKiB } from "./procs.ts"
import { type Gateway, startGateway } from "./subjects.ts"

export interface SoakOptions {
  readonly seconds: number
  readonly tunnels: number
  readonly gatewayProcs: number
  readonly churnPerSecond: number
  readonly bulkSessions: number
  readonly bulkBytesPerSecond: number
  readonly reconnectEverySeconds: number
  readonly sampleEverySeconds: number
  readonly maxRssSlopeMiBPerMinute: number
  /** The leak verdict when /metrics has a heap gauge (RSS steps up at new highs of concurrent sessions). */
  readonly maxHeapSlopeMiBPerMinute: number
  readonly fdSlack: number
  readonly runner: RelayRunner
  readonly gatewayBin: string
  readonly log?: (line: string) => void
}

export interface SoakSample {
  /** Seconds since the load started. */
  readonly t: number
  readonly rssKiB: number
  readonly fds: number
  readonly sessionsActive: number
  readonly tunnels: number
  readonly heapBytes: number | undefined
}

export interface SoakResult {
  readonly options: Omit<SoakOptions, "log" | "runner" | "gatewayBin">
  readonly samples: ReadonlyArray<SoakSample>
  readonly rssSlopeMiBPerMinute: number
  readonly heapSlopeMiBPerMinute: number | undefined
  readonly fdsBefore: number
  readonly fdsAfter: number
  readonly sessionsActiveAfter: number
  readonly churn: { readonly ok: number; readonly cutByRestart: number; readonly failed: number; readonly errors: ReadonlyArray<string> }
  readonly bulkMiB: number
  readonly restarts: number
  readonly failures: ReadonlyArray<string>
  readonly passed: boolean
}

/** Least-squares slope of y over x. */
export const slope = (points: ReadonlyArray<readonly [number, number]>): number => {
  const n = points.length
  if (n < 2) return 0
  const mx = points.reduce((s, [x]) => s + x, 0) / n
  const my = points.reduce((s, [, y]) => s + y, 0) / n
  let num = 0
  let den = 0
  for (const [x, y] of points) {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

const HEAP_METRIC = /heap.*used|used.*heap/

const ECHO = Buffer.alloc(64, 0x62)
const BULK_BYTES = 2 ** 40 // longer than any soak: the bulk sessions end when the load does

export const runSoak = async (m: LoadMaterial, o: SoakOptions): Promise<SoakResult> => {
  const log = o.log ?? (() => undefined)
  const flags = optionalFlags(await relayStartHelp(o.runner))
  const relay = await startLoadRelay(m, { runner: o.runner, args: flags.limitArgs, label: "soak relay" })
  const procs: Array<{ gateway: Gateway; certs: { path: string; ids: ReadonlyArray<string> }; generation: number; down: boolean }> = []
  const stopped: Array<Promise<unknown>> = []
  try {
    // Gateways: each process keeps its certificate file, so a restart brings back the same ids.
    const per = Array.from({ length: o.gatewayProcs }, (_, i) => Math.floor(o.tunnels / o.gatewayProcs) + (i < o.tunnels % o.gatewayProcs ? 1 : 0))
    const start = (i: number, certs: { path: string; ids: ReadonlyArray<string> }) =>
      startGateway({ gateway: m.gateway, certFile: () => certs }, o.gatewayBin, {
        label: `soak gateways ${i}`,
        sshAddr: `127.0.0.1:${relay.sshPort}`,
        connections: certs.ids.length
      })
    await Promise.all(per.map(async (n, i) => {
      const certs = m.certFile(`soak-${i}`, n)
      procs[i] = { gateway: await start(i, certs), certs, generation: 0, down: false }
    }))
    await relay.waitMetric("relay_tunnels_connected", o.tunnels, 60_000)
    const contexts = new Map<string, tls.SecureContext>()
    for (const p of procs) for (const id of p.certs.ids) contexts.set(id, await m.clientContext(id))
    const fdsBefore = fdCount(relay.pid)
    log(`${o.tunnels} tunnels up; relay ${fdsBefore} fds, RSS ${(rssKiB(relay.pid) / 1024).toFixed(1)} MiB; load for ${o.seconds} s`)

    const t0 = performance.now()
    const elapsed = () => (performance.now() - t0) / 1000
    let loadOn = true
    let endLoad: () => void = () => undefined
    const loadEnded = new Promise<void>((resolve) => (endLoad = resolve))
    /** Sleeps `ms`, or less when the load ends. */
    const pause = (ms: number) => Promise.race([loadEnded, new Promise<void>((resolve) => setTimeout(resolve, ms).unref())])

    // Long bulk sessions, on gateway process 0 (never restarted).
    let bulkBytes = 0
    const bulk = procs[0]!.certs.ids.slice(0, o.bulkSessions).map((id) =>
      download(relay.tlsPort, contexts.get(id)!, BULK_BYTES, { bytesPerSecond: o.bulkBytesPerSecond, count: (n) => (bulkBytes += n) })
    )
    const bulkFailures: Array<string> = []
    const bulkDone = bulk.map((d) => d.done.catch((err: Error) => void bulkFailures.push(err.message)))

    // Churn: one short session every 1/churnPerSecond s, round robin over the tunnels.
    const churn = { ok: 0, cutByRestart: 0, failed: 0, errors: [] as Array<string> }
    const inFlight = new Set<Promise<void>>()
    let next = 0
    const churnOne = async () => {
      const p = procs[next % procs.length]!
      const id = p.certs.ids[Math.floor(next / procs.length) % p.certs.ids.length]!
      next++
      if (p.down) return // its tunnels are being restarted: nothing to route to
      const generation = p.generation
      try {
        const socket = await openEchoSession(relay.tlsPort, contexts.get(id)!, 30_000)
        try {
          await roundTrip(socket, ECHO, 30_000)
        } finally {
          socket.destroy()
        }
        churn.ok++
      } catch (err) {
        if (p.down || p.generation !== generation) churn.cutByRestart++
        else {
          churn.failed++
          if (churn.errors.length < 10) churn.errors.push(`${id}: ${(err as Error).message}`)
        }
      }
    }
    const churnTimer = setInterval(() => {
      if (inFlight.size >= 100) return // the relay is slower than the schedule: do not pile up
      const task = churnOne().finally(() => inFlight.delete(task))
      inFlight.add(task)
    }, 1000 / o.churnPerSecond)

    // Gateway restarts, round robin over processes 1.. (process 0 carries the bulk sessions).
    let restarts = 0
    let restartError: string | undefined
    const restartLoop = (async () => {
      let k = 0
      while (loadOn && procs.length > 1) {
        await pause(o.reconnectEverySeconds * 1000)
        if (!loadOn) break
        const i = 1 + (k++ % (procs.length - 1))
        const p = procs[i]!
        p.down = true
        p.generation++
        await p.gateway.proc.stop()
        // The relay must have dropped the old tunnels, or it would refuse the new ones as duplicates.
        await relay.waitMetric("relay_tunnels_connected", o.tunnels - p.certs.ids.length, 30_000)
        p.gateway = await start(i, p.certs)
        await relay.waitMetric("relay_tunnels_connected", o.tunnels, 30_000)
        p.down = false
        restarts++
      }
    })().catch((err: Error) => {
      restartError = err.message
    })

    // Samples.
    const samples: Array<SoakSample> = []
    const sample = async () => {
      const metrics = await relay.metrics()
      const heapName = [...metrics.keys()].find((k) => HEAP_METRIC.test(k))
      samples.push({
        t: elapsed(),
        rssKiB: rssKiB(relay.pid),
        fds: fdCount(relay.pid),
        sessionsActive: metrics.get("relay_sessions_active") ?? 0, // absent until the first session
        tunnels: metrics.get("relay_tunnels_connected") ?? 0,
        heapBytes: heapName === undefined ? undefined : metrics.get(heapName)
      })
    }
    while (elapsed() < o.seconds) {
      await sample()
      const last = samples[samples.length - 1]!
      if (samples.length % Math.max(1, Math.round(30 / o.sampleEverySeconds)) === 0) {
        log(`t=${last.t.toFixed(0)} s: RSS ${(last.rssKiB / 1024).toFixed(1)} MiB, ${last.fds} fds, ${last.sessionsActive} sessions, ` +
          `${last.tunnels} tunnels; churn ${churn.ok} ok / ${churn.cutByRestart} cut / ${churn.failed} failed; bulk ${(bulkBytes / 2 ** 20).toFixed(0)} MiB; ${restarts} restarts`)
      }
      await pause(Math.min(o.sampleEverySeconds * 1000, Math.max(0, (o.seconds - elapsed()) * 1000)))
    }
    await sample()

    // Stop the load, then the relay must come back to where it started.
    loadOn = false
    endLoad()
    clearInterval(churnTimer)
    await Promise.all(inFlight)
    for (const d of bulk) d.stop()
    await Promise.all(bulkDone)
    await restartLoop
    await relay.waitMetric("relay_sessions_active", 0, 30_000).catch(() => undefined)
    await relay.waitMetric("relay_tunnels_connected", o.tunnels, 30_000).catch(() => undefined)
    const metricsAfter = await relay.metrics()
    const sessionsActiveAfter = metricsAfter.get("relay_sessions_active") ?? NaN
    // Sockets close asynchronously: give the fd count a bounded time to come back.
    const deadline = Date.now() + 15_000
    let fdsAfter = fdCount(relay.pid)
    while (fdsAfter > fdsBefore + o.fdSlack && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200))
      fdsAfter = fdCount(relay.pid)
    }

    const secondHalf = samples.filter((s) => s.t >= o.seconds / 2)
    const rssSlopeMiBPerMinute = slope(secondHalf.map((s) => [s.t / 60, s.rssKiB / 1024] as const))
    const heapSlopeMiBPerMinute = secondHalf.every((s) => s.heapBytes !== undefined)
      ? slope(secondHalf.map((s) => [s.t / 60, s.heapBytes! / 2 ** 20] as const))
      : undefined
    const failures: Array<string> = []
    if (heapSlopeMiBPerMinute !== undefined && heapSlopeMiBPerMinute > o.maxHeapSlopeMiBPerMinute) {
      failures.push(`JS heap grows ${heapSlopeMiBPerMinute.toFixed(2)} MiB/min over the second half (bound ${o.maxHeapSlopeMiBPerMinute})`)
    }
    // RSS steps up at each new high of concurrent sessions (glibc keeps their freed native memory,
    // docs/load.md): only the verdict when there is no heap gauge to tell a leak from that.
    if (heapSlopeMiBPerMinute === undefined && rssSlopeMiBPerMinute > o.maxRssSlopeMiBPerMinute) {
      failures.push(`RSS grows ${rssSlopeMiBPerMinute.toFixed(2)} MiB/min over the second half (bound ${o.maxRssSlopeMiBPerMinute})`)
    }
    if (fdsAfter > fdsBefore + o.fdSlack) failures.push(`fds ${fdsAfter} after the load, ${fdsBefore} before (slack ${o.fdSlack})`)
    if (sessionsActiveAfter !== 0) failures.push(`${sessionsActiveAfter} sessions still active after the clients left`)
    if (churn.failed > 0) failures.push(`${churn.failed} churn sessions failed: ${churn.errors.join("; ")}`)
    if (bulkFailures.length > 0) failures.push(`bulk sessions failed: ${bulkFailures.join("; ")}`)
    if (churn.ok === 0) failures.push("no churn session succeeded")
    if (restartError !== undefined) failures.push(`a gateway restart failed: ${restartError}`)
    const { log: _log, runner: _runner, gatewayBin: _bin, ...options } = o
    return {
      options,
      samples,
      rssSlopeMiBPerMinute,
      heapSlopeMiBPerMinute,
      fdsBefore,
      fdsAfter,
      sessionsActiveAfter,
      churn,
      bulkMiB: bulkBytes / 2 ** 20,
      restarts,
      failures,
      passed: failures.length === 0
    }
  } finally {
    for (const p of procs) if (p !== undefined) stopped.push(p.gateway.proc.stop())
    await Promise.all(stopped)
    await relay.stop()
  }
}
