/**
 * Graceful drain. On SIGTERM/SIGINT the relay stops being ready, both listeners stop accepting,
 * live sessions get up to the drain timeout to finish on their own, and only then is everything
 * closed. Listeners register what "stop accepting" and "idle" mean for them; the drain runs as the
 * first finalizer of the relay's scope, before any listener or tunnel is torn down.
 */
import { Context, Duration, Effect, Ref } from "effect"

export interface DrainParticipant {
  /** Stop taking new connections; existing ones continue. */
  readonly stopAccepting: Effect.Effect<void>
  /** Completes when this participant has no work in flight. */
  readonly idle: Effect.Effect<void>
}

export interface DrainShape {
  readonly register: (participant: DrainParticipant) => Effect.Effect<void>
  /** Stop accepting on every listener. */
  readonly stopAccepting: Effect.Effect<void>
  /** Wait for every participant to be idle, up to `timeout`; true if everything finished. */
  readonly awaitIdle: (timeout: Duration.Duration) => Effect.Effect<boolean>
}

export class Drain extends Context.Tag("relay/Drain")<Drain, DrainShape>() {
  static readonly make = Effect.map(Ref.make<ReadonlyArray<DrainParticipant>>([]), (participants): DrainShape => ({
    register: (participant) => Ref.update(participants, (all) => [...all, participant]),
    stopAccepting: Effect.flatMap(Ref.get(participants), (all) =>
      Effect.forEach(all, (p) => p.stopAccepting, { discard: true })
    ),
    awaitIdle: (timeout) =>
      Effect.flatMap(Ref.get(participants), (all) =>
        // Finalizers are uninterruptible: without `interruptible` the timeout could never fire.
        Effect.forEach(all, (p) => p.idle, { concurrency: "unbounded", discard: true }).pipe(
          Effect.interruptible,
          Effect.timeoutOption(timeout),
          Effect.map((finished) => finished._tag === "Some")
        )
      )
  }))
}
