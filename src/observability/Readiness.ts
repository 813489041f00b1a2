/**
 * Readiness: the relay is ready once it is registered and both listeners are bound, and stops
 * being ready when it starts draining. `/readyz` reads it; load balancers and systemd act on it.
 */
import { Context, Effect, Layer, Ref } from "effect"

export type ReadinessState = "starting" | "ready" | "draining"

export interface ReadinessShape {
  readonly state: Effect.Effect<ReadinessState>
  readonly markReady: Effect.Effect<void>
  readonly markDraining: Effect.Effect<void>
}

export class Readiness extends Context.Tag("relay/Readiness")<Readiness, ReadinessShape>() {
  static readonly make = Effect.map(Ref.make<ReadinessState>("starting"), (ref) => ({
    state: Ref.get(ref),
    markReady: Ref.update(ref, (s) => (s === "starting" ? "ready" : s)),
    markDraining: Ref.set(ref, "draining" as const)
  }))
  static readonly layer = Layer.effect(Readiness, Readiness.make)
}
