/**
 * The measurements. Each one warms up first, sizes its work from the warm-up so a repetition takes
 * about `seconds`, repeats, and reports the median; CPU is the measured process's utime+stime
 * (/proc/<pid>/stat) across all repetitions, divided by the work done.
 */
import { bulkDown, bulkUp, idleSession, pingSession, type Target, type Transfer } from "./client.ts"
import { cpuSeconds, type Proc, settledRssKiB, sleep } from "./procs.ts"

export const MiB = 1024 * 1024
export const GiB = 1024 * MiB

export interface Settings {
  /** repetitions per measurement (median reported) */
  readonly reps: number
  /** target duration of one bulk repetition, seconds */
  readonly seconds: number
  /** duration of one session-rate repetition, seconds */
  readonly rateSeconds: number
  readonly concurrency: number
  readonly serialPings: number
  readonly parallelSessions: number
  readonly idleTunnels: number
  readonly idleSessions: number
}

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** Nearest-rank percentile. */
export const percentile = (xs: ReadonlyArray<number>, p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!
}

const mibps = (t: Transfer) => t.bytes / MiB / (t.ms / 1000)

/** Work size for about `seconds` at `rate` MiB/s, whole MiB, within [min, max]. */
const sizeFor = (rate: number, seconds: number, min: number, max: number) =>
  Math.round(Math.min(max, Math.max(min, rate * MiB * seconds)) / MiB) * MiB

/** A process whose CPU we charge, or none (direct connection). */
export type Meter = number | undefined
const cpuOf = (pid: Meter) => (pid === undefined ? 0 : cpuSeconds(pid))

export interface BulkResult {
  /** median MiB/s */
  readonly mibps: number
  readonly samples: ReadonlyArray<number>
  /** relay CPU seconds per GiB moved (undefined without a meter) */
  readonly cpuPerGiB: number | undefined
  readonly bytesPerRep: number
  /** what the ratio is made of: bytes measured, relay CPU seconds spent on them */
  readonly bytes: number
  readonly cpu: number | undefined
}

const bulkResult = (samples: ReadonlyArray<number>, bytes: number, cpu: number | undefined, bytesPerRep: number): BulkResult => ({
  mibps: median(samples),
  samples,
  cpuPerGiB: cpu === undefined ? undefined : cpu / (bytes / GiB),
  bytesPerRep,
  bytes,
  cpu
})

/** Repetitions measured apart (interleaved with another subject's) as one result. */
export const combineBulk = (parts: ReadonlyArray<BulkResult>): BulkResult => {
  const cpus = parts.map((p) => p.cpu)
  return bulkResult(
    parts.flatMap((p) => p.samples),
    parts.reduce((sum, p) => sum + p.bytes, 0),
    cpus.every((c) => c !== undefined) ? cpus.reduce((sum, c) => sum + c, 0) : undefined,
    parts[0]!.bytesPerRep
  )
}

/** One session, one direction. */
export const bulk = async (
  direction: "down" | "up",
  target: Target,
  meter: Meter,
  s: Settings,
  o: { readonly warmBytes?: number; readonly minBytes?: number; readonly maxBytes?: number; readonly seconds?: number } = {}
): Promise<BulkResult> => {
  const run = direction === "down" ? bulkDown : bulkUp
  // The warm-up also warms the JIT of a fresh relay; its rate sizes the repetitions.
  const warm = await run(target, o.warmBytes ?? 64 * MiB)
  const size = sizeFor(mibps(warm), o.seconds ?? s.seconds, o.minBytes ?? 32 * MiB, o.maxBytes ?? 2 * GiB)
  const samples: Array<number> = []
  const cpu0 = cpuOf(meter)
  for (let i = 0; i < s.reps; i++) samples.push(mibps(await run(target, size)))
  const cpu = cpuOf(meter) - cpu0
  return bulkResult(samples, size * s.reps, meter === undefined ? undefined : cpu, size)
}

/** `sessions` downloads at once through the same gateway; aggregate MiB/s over the wall time. */
export const parallelDown = async (target: Target, meter: Meter, s: Settings): Promise<BulkResult> => {
  const n = s.parallelSessions
  const once = async (size: number) => {
    const start = performance.now()
    await Promise.all(Array.from({ length: n }, () => bulkDown(target, size)))
    return (size * n) / MiB / ((performance.now() - start) / 1000)
  }
  const warmRate = await once(8 * MiB)
  const size = sizeFor(warmRate / n, s.seconds, 8 * MiB, GiB)
  const samples: Array<number> = []
  const cpu0 = cpuOf(meter)
  for (let i = 0; i < s.reps; i++) samples.push(await once(size))
  const cpu = cpuOf(meter) - cpu0
  return bulkResult(samples, size * n * s.reps, meter === undefined ? undefined : cpu, size * n)
}

export interface RateResult {
  /** median sessions per second */
  readonly perSecond: number
  readonly samples: ReadonlyArray<number>
  /** relay CPU ms per session */
  readonly cpuMsPerSession: number | undefined
  readonly p50: number
  readonly p99: number
  readonly errors: number
  readonly firstError: string | undefined
  readonly sessions: number
  readonly cpu: number | undefined
  readonly latencies: ReadonlyArray<number>
}

const rateResult = (
  samples: ReadonlyArray<number>,
  latencies: ReadonlyArray<number>,
  sessions: number,
  cpu: number | undefined,
  errors: number,
  firstError: string | undefined
): RateResult => ({
  perSecond: median(samples),
  samples,
  cpuMsPerSession: cpu === undefined || sessions === 0 ? undefined : (cpu * 1000) / sessions,
  p50: percentile(latencies, 50),
  p99: percentile(latencies, 99),
  errors,
  firstError,
  sessions,
  cpu,
  latencies
})

/** Repetitions measured apart (interleaved with another subject's) as one result. */
export const combineRate = (parts: ReadonlyArray<RateResult>): RateResult => {
  const cpus = parts.map((p) => p.cpu)
  return rateResult(
    parts.flatMap((p) => p.samples),
    parts.flatMap((p) => p.latencies),
    parts.reduce((sum, p) => sum + p.sessions, 0),
    cpus.every((c) => c !== undefined) ? cpus.reduce((sum, c) => sum + c, 0) : undefined,
    parts.reduce((sum, p) => sum + p.errors, 0),
    parts.find((p) => p.firstError !== undefined)?.firstError
  )
}

/** New backend-style ping sessions with `concurrency` in flight, for `seconds` per repetition. */
export const sessionRate = async (target: Target, meter: Meter, s: Settings): Promise<RateResult> => {
  let errors = 0
  let firstError: string | undefined
  const latencies: Array<number> = []
  const window = async (seconds: number, record: boolean) => {
    const deadline = performance.now() + seconds * 1000
    let done = 0
    const start = performance.now()
    const worker = async () => {
      while (performance.now() < deadline) {
        try {
          const ms = await pingSession(target)
          done++
          if (record) latencies.push(ms)
        } catch (err) {
          errors++
          firstError ??= err instanceof Error ? err.message.split("\n")[0] : String(err)
        }
      }
    }
    await Promise.all(Array.from({ length: s.concurrency }, worker))
    return done / ((performance.now() - start) / 1000)
  }
  await window(1, false)
  errors = 0
  firstError = undefined
  const samples: Array<number> = []
  let sessions = 0
  const cpu0 = cpuOf(meter)
  for (let i = 0; i < s.reps; i++) {
    const before = latencies.length
    samples.push(await window(s.rateSeconds, true))
    sessions += latencies.length - before
  }
  const cpu = cpuOf(meter) - cpu0
  return rateResult(samples, latencies, sessions, meter === undefined ? undefined : cpu, errors, firstError)
}

export interface SerialResult {
  readonly p50: number
  readonly p99: number
  readonly latencies: ReadonlyArray<number>
}

const serialResult = (latencies: ReadonlyArray<number>): SerialResult => ({
  p50: percentile(latencies, 50),
  p99: percentile(latencies, 99),
  latencies
})

export const combineSerial = (parts: ReadonlyArray<SerialResult>): SerialResult => serialResult(parts.flatMap((p) => p.latencies))

/** Ping sessions one after another (`s.serialPings` of them): latency without queueing. */
export const serialPings = async (target: Target, s: Settings): Promise<SerialResult> => {
  for (let i = 0; i < 10; i++) await pingSession(target)
  const latencies: Array<number> = []
  for (let i = 0; i < s.serialPings; i++) latencies.push(await pingSession(target))
  return serialResult(latencies)
}

export interface MemoryResult {
  readonly idleKiB: number
  readonly tunnelsKiB: number
  readonly sessionsKiB: number
  readonly perTunnelKiB: number
  readonly perSessionKiB: number
}

/**
 * RSS of a fresh relay: idle, with `idleTunnels` gateway tunnels, then with `idleSessions` idle
 * sessions on top (spread over a few of those tunnels). The caller starts the relay and the
 * gateways; `openTunnels` resolves once the relay has registered them all.
 */
export const memory = async (
  relay: Proc,
  s: Settings,
  openTunnels: () => Promise<ReadonlyArray<Target>>,
  settleMs = 2_000
): Promise<MemoryResult> => {
  await sleep(settleMs)
  const idleKiB = await settledRssKiB(relay.pid)
  const targets = await openTunnels()
  await sleep(settleMs)
  const tunnelsKiB = await settledRssKiB(relay.pid)
  const sockets: Array<{ destroy(): void }> = []
  try {
    let next = 0
    const worker = async () => {
      while (next < s.idleSessions) {
        const i = next++
        sockets.push(await idleSession(targets[i % targets.length]!))
      }
    }
    await Promise.all(Array.from({ length: 32 }, worker))
    await sleep(settleMs)
    const sessionsKiB = await settledRssKiB(relay.pid)
    return {
      idleKiB,
      tunnelsKiB,
      sessionsKiB,
      perTunnelKiB: (tunnelsKiB - idleKiB) / s.idleTunnels,
      perSessionKiB: (sessionsKiB - tunnelsKiB) / s.idleSessions
    }
  } finally {
    for (const socket of sockets) socket.destroy()
  }
}

/** The SSH-layer servers: DOWN/UP commands over stdin, timed by the server itself. */
export const sshLayer = async (
  server: Proc,
  direction: "DOWN" | "UP",
  s: Settings
): Promise<BulkResult> => {
  const run = async (n: number) => {
    const done = server.next(/^(DONE bytes=(\d+) ms=([\d.]+)|ERROR .*)$/, 120_000)
    server.send(`${direction} ${n}`)
    const m = await done
    if (m[2] === undefined) throw new Error(`${server.label}: ${m[0]}`)
    return Number(m[2]) / MiB / (Number(m[3]) / 1000)
  }
  const warm = await run(32 * MiB)
  const size = sizeFor(warm, s.seconds, 32 * MiB, 2 * GiB)
  const samples: Array<number> = []
  const cpu0 = cpuSeconds(server.pid)
  for (let i = 0; i < s.reps; i++) samples.push(await run(size))
  const cpu = cpuSeconds(server.pid) - cpu0
  return bulkResult(samples, size * s.reps, cpu, size)
}
