/**
 * Give memory back when the relay goes quiet.
 *
 * V8 lets dead Buffers (socket reads, decrypted packets already forwarded) pile up to tens of MiB
 * before it collects, and an idle relay allocates nothing that would trigger a collection: after a
 * bulk transfer the process can sit on that garbage for minutes (measured: +30 MiB RSS for over
 * 60 s). So every few seconds the relay looks at its own CPU time; when it was all but idle and
 * RSS stands well above what it was after the last collection, it runs one full GC (a 10-50 ms
 * pause, only when nothing is happening).
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { Duration, Effect, Layer, Schedule } from "effect"

export interface IdleGcSettings {
  readonly every: Duration.Duration
  /** At most this share of one core used since the last look counts as idle. */
  readonly idleCpuShare: number
  /** Collect only when RSS grew at least this much since the last collection. */
  readonly growthBytes: number
}

export const defaultIdleGcSettings: IdleGcSettings = {
  every: Duration.seconds(5),
  idleCpuShare: 0.02,
  growthBytes: 16 * 1024 * 1024
}

/** The decision, apart from the clock and the process: collect now? */
export const shouldCollect = (
  settings: IdleGcSettings,
  sample: { readonly cpuMicros: number; readonly intervalMicros: number; readonly rss: number; readonly rssAfterLastGc: number }
): boolean =>
  sample.cpuMicros <= sample.intervalMicros * settings.idleCpuShare && sample.rss - sample.rssAfterLastGc >= settings.growthBytes

/** V8's full collection, made reachable without a command-line flag. */
const exposeGc = (): (() => void) => {
  setFlagsFromString("--expose-gc")
  return runInNewContext("gc") as () => void
}

export const IdleGcLive = (settings: IdleGcSettings = defaultIdleGcSettings) =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      const gc = exposeGc()
      let rssAfterLastGc = process.memoryUsage.rss()
      let lastCpu = process.cpuUsage()
      let lastAt = process.hrtime.bigint()
      const look = Effect.sync(() => {
        const cpu = process.cpuUsage(lastCpu)
        const now = process.hrtime.bigint()
        const sample = {
          cpuMicros: cpu.user + cpu.system,
          intervalMicros: Number(now - lastAt) / 1_000,
          rss: process.memoryUsage.rss(),
          rssAfterLastGc
        }
        if (shouldCollect(settings, sample)) {
          gc()
          rssAfterLastGc = process.memoryUsage.rss()
        } else if (sample.rss < rssAfterLastGc) {
          rssAfterLastGc = sample.rss
        }
        // Measure the next interval from here, so the collection's own CPU is not counted as load.
        lastCpu = process.cpuUsage()
        lastAt = process.hrtime.bigint()
      })
      yield* look.pipe(Effect.repeat(Schedule.spaced(settings.every)), Effect.forkScoped, Effect.interruptible)
    })
  )
