/**
 * Give memory back when the relay goes quiet.
 *
 * V8 lets dead Buffers (socket reads, decrypted packets already forwarded) pile up to tens of MiB
 * before it collects, and an idle relay allocates nothing that would trigger a collection: after a
 * bulk transfer the process can sit on that garbage for minutes (measured: +30 MiB RSS for over
 * 60 s). So every few seconds the relay looks at its own CPU time; when it was all but idle and
 * what it holds grew well past what it held after the last collection, it runs one full GC (a
 * 10-50 ms pause, only when nothing is happening).
 *
 * "What it holds" is looked at twice: RSS, and the JS-owned memory (V8 heap in use plus Buffers).
 * The second matters because garbage often lands in memory the allocator already had: a 64 MiB
 * transfer can leave RSS flat and still leave 10+ MiB of dead Buffers that only a collection frees.
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { Duration, Effect, Layer, Metric, Schedule } from "effect"

export interface IdleGcSettings {
  readonly every: Duration.Duration
  /** At most this share of one core used since the last look counts as idle. */
  readonly idleCpuShare: number
  /** Collect when RSS grew at least this much since the last collection... */
  readonly growthBytes: number
  /** ...or the V8 heap in use plus Buffers grew at least this much. */
  readonly jsGrowthBytes: number
}

export const defaultIdleGcSettings: IdleGcSettings = {
  every: Duration.seconds(5),
  idleCpuShare: 0.02,
  growthBytes: 16 * 1024 * 1024,
  jsGrowthBytes: 8 * 1024 * 1024
}

/** What the process holds: resident, and owned by JS (the V8 heap in use plus Buffers). */
export interface Holding {
  readonly rss: number
  readonly js: number
}

export const holdingNow = (): Holding => {
  const memory = process.memoryUsage()
  return { rss: memory.rss, js: memory.heapUsed + memory.arrayBuffers }
}

/** The decision, apart from the clock and the process: collect now? */
export const shouldCollect = (
  settings: IdleGcSettings,
  sample: { readonly cpuMicros: number; readonly intervalMicros: number; readonly now: Holding; readonly afterLastGc: Holding }
): boolean =>
  sample.cpuMicros <= sample.intervalMicros * settings.idleCpuShare &&
  (sample.now.rss - sample.afterLastGc.rss >= settings.growthBytes || sample.now.js - sample.afterLastGc.js >= settings.jsGrowthBytes)

export const idleCollections = Metric.counter("relay_idle_collections_total", {
  description: "Full garbage collections the relay ran because it was idle and held more than after the last one",
  incremental: true
})

/** V8's full collection, made reachable without a command-line flag. */
const exposeGc = (): (() => void) => {
  setFlagsFromString("--expose-gc")
  return runInNewContext("gc") as () => void
}

export const IdleGcLive = (settings: IdleGcSettings = defaultIdleGcSettings) =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      const gc = exposeGc()
      let afterLastGc = holdingNow()
      let lastCpu = process.cpuUsage()
      let lastAt = process.hrtime.bigint()
      const look = Effect.suspend(() => {
        const cpu = process.cpuUsage(lastCpu)
        const sample = {
          cpuMicros: cpu.user + cpu.system,
          intervalMicros: Number(process.hrtime.bigint() - lastAt) / 1_000,
          now: holdingNow(),
          afterLastGc
        }
        const collect = shouldCollect(settings, sample)
        if (collect) {
          gc()
          afterLastGc = holdingNow()
        } else {
          // Memory given back on its own lowers the mark growth is measured from.
          afterLastGc = { rss: Math.min(afterLastGc.rss, sample.now.rss), js: Math.min(afterLastGc.js, sample.now.js) }
        }
        // Measure the next interval from here, so the collection's own CPU is not counted as load.
        lastCpu = process.cpuUsage()
        lastAt = process.hrtime.bigint()
        return collect ? Metric.increment(idleCollections) : Effect.void
      })
      yield* look.pipe(Effect.repeat(Schedule.spaced(settings.every)), Effect.forkScoped, Effect.interruptible)
    })
  )
