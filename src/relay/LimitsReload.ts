/**
 * SIGHUP: re-read the limits file. Valid -> the new limits apply to new connections and sessions at
 * once (the changed fields are logged); invalid -> an error is logged and the old limits stay.
 * Either way the process keeps running: the handler replaces Node's default for SIGHUP (exit) for
 * as long as the relay's scope is open.
 */
import type { FileSystem } from "@effect/platform"
import { Effect, FiberSet, Metric, type Scope } from "effect"
import { configReloads, tagged } from "../observability/Metrics.ts"
import { changedLimits, type LimitsShape, type LimitsSource, readLimitsFile } from "./Limits.ts"

export const reloadLimits = (limits: LimitsShape, source: LimitsSource) =>
  Effect.gen(function* () {
    if (source.file === undefined) {
      return yield* Effect.logInfo("SIGHUP received; no --limits-file, nothing to reload")
    }
    const next = yield* Effect.either(readLimitsFile(source.file, source.base))
    if (next._tag === "Left") {
      yield* Metric.increment(tagged(configReloads, "outcome", "failure"))
      return yield* Effect.logError("Limits reload failed, keeping the current limits").pipe(
        Effect.annotateLogs({ error: next.left.message })
      )
    }
    const changed = changedLimits(yield* limits.get, next.right)
    yield* limits.set(next.right)
    yield* Metric.increment(tagged(configReloads, "outcome", "success"))
    yield* Effect.logInfo("Limits reloaded").pipe(
      Effect.annotateLogs({ file: source.file, changed: changed.length === 0 ? "nothing" : changed.join(", ") })
    )
  })

/** Reload on every SIGHUP while the scope is open. */
export const reloadLimitsOnSighup = (
  limits: LimitsShape,
  source: LimitsSource
): Effect.Effect<void, never, Scope.Scope | FileSystem.FileSystem> =>
  Effect.gen(function* () {
    // One reload at a time is not needed: each reads the whole file and the last one wins.
    const run = yield* FiberSet.makeRuntime<FileSystem.FileSystem>()
    const onSighup = () => {
      run(reloadLimits(limits, source))
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => process.on("SIGHUP", onSighup)),
      () => Effect.sync(() => process.off("SIGHUP", onSighup))
    )
  })
