/**
 * Heartbeat (protocol.md §6): the first one ~10 s after start, retried every 10 s until one
 * succeeds, then every 30 min. Each success logs `Relay is reachable by Infisical`; failures are
 * logged and never stop the relay.
 */
import { Effect, Layer, Metric, Ref, Schedule } from "effect"
import { ControlPlane } from "./controlplane/ControlPlane.ts"
import { heartbeatLastSuccess, heartbeats, recordOutcome } from "./observability/ControlPlaneMetrics.ts"
import { RelayConfig } from "./RelayConfig.ts"

export const HeartbeatLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const controlPlane = yield* ControlPlane
    const succeeded = yield* Ref.make(false)
    yield* Metric.set(heartbeatLastSuccess, 0)
    const beat = recordOutcome(controlPlane.heartbeat, heartbeats, heartbeatLastSuccess).pipe(
      Effect.tap(() => Effect.logInfo("Relay is reachable by Infisical")),
      Effect.tap(() => Ref.set(succeeded, true)),
      Effect.tapError((e) => Effect.logWarning(`Heartbeat failed: ${e.message}`)),
      Effect.ignore,
      Effect.withSpan("relay.heartbeat")
    )
    // Phase 1 ends at the first success; phase 2 beats at the long cadence.
    const untilFirstSuccess = Effect.repeat(Effect.zipRight(beat, Ref.get(succeeded)), {
      schedule: Schedule.spaced(config.heartbeat.retryEvery),
      until: (ok) => ok
    })
    yield* Effect.sleep(config.heartbeat.firstAfter).pipe(
      Effect.zipRight(untilFirstSuccess),
      Effect.zipRight(Effect.schedule(beat, Schedule.spaced(config.heartbeat.every))),
      Effect.forkScoped,
      Effect.interruptible
    )
  })
)
