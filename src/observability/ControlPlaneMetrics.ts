/**
 * How the relay's conversation with the control plane is going: heartbeats and certificate
 * renewals by outcome, and when each last succeeded (Unix time; 0 until the first success).
 */
import { Clock, Effect, Metric } from "effect"

export const heartbeats = Metric.counter("relay_heartbeats_total", {
  description: "Heartbeats sent to the control plane, by outcome (success | failure)",
  incremental: true
})
export const heartbeatLastSuccess = Metric.gauge("relay_heartbeat_last_success_timestamp_seconds", {
  description: "When a heartbeat last succeeded, Unix time (0: never)"
})
export const renewals = Metric.counter("relay_certificate_renewals_total", {
  description: "Certificate renewal attempts, by outcome (success | failure)",
  incremental: true
})
export const renewalLastSuccess = Metric.gauge("relay_certificate_renewal_last_success_timestamp_seconds", {
  description: "When certificates were last renewed, Unix time (0: not yet)"
})

/** Count `effect`'s outcome on `counter` and stamp `lastSuccess` when it succeeds. */
export const recordOutcome = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  counter: Metric.Metric.Counter<number>,
  lastSuccess: Metric.Metric.Gauge<number>
): Effect.Effect<A, E, R> =>
  effect.pipe(
    Effect.tap(() =>
      Effect.zipRight(
        Metric.increment(Metric.tagged(counter, "outcome", "success")),
        Effect.flatMap(Clock.currentTimeMillis, (now) => Metric.set(lastSuccess, now / 1000))
      )
    ),
    Effect.tapError(() => Metric.increment(Metric.tagged(counter, "outcome", "failure")))
  )
