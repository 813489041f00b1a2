/**
 * The relay's layer graph, composed in one place. `relay start` runs `relayLayer(config)`; tests
 * run the same function with a swapped control plane. Platform layers (HTTP client, file system)
 * are provided by the entry point.
 */
import { Duration, Effect, Layer, Option } from "effect"
import { AuthLive } from "./Auth.ts"
import { type ControlPlane, ControlPlaneLive } from "./controlplane/ControlPlane.ts"
import { CredentialsLive } from "./Credentials.ts"
import { HeartbeatLive } from "./Heartbeat.ts"
import { notifyReadyUntilStopping } from "./notify/SdNotify.ts"
import { Readiness } from "./observability/Readiness.ts"
import { CertificateExpiryLive } from "./observability/RuntimeMetrics.ts"
import { StatusServerLive } from "./observability/StatusServer.ts"
import { RelayConfig, type RelayConfigShape } from "./RelayConfig.ts"
import { RenewalLive } from "./Renewal.ts"
import { Drain } from "./relay/Drain.ts"
import { defaultLimitsSource, describeLimits, Limits, makeLimits } from "./relay/Limits.ts"
import { reloadLimitsOnSighup } from "./relay/LimitsReload.ts"
import { SshListenerLive } from "./relay/SshListener.ts"
import { TlsListenerLive } from "./relay/TlsListener.ts"
import { TunnelsLive } from "./relay/Tunnels.ts"

/** The data plane: both listeners over the tunnel registry. */
export const RelayServerLive = Layer.mergeAll(SshListenerLive, TlsListenerLive).pipe(Layer.provide(TunnelsLive))

/** AuthLayer -> ControlPlaneLayer: who the relay is to the control plane. */
export const ControlPlaneWithAuthLive = ControlPlaneLive.pipe(Layer.provide(AuthLive))

/** Everything `relay start` runs, over a given control plane (tests swap it). */
export const relayLayerWith =
  <E, R>(controlPlane: Layer.Layer<ControlPlane, E, R>) => (config: RelayConfigShape) =>
    Layer.mergeAll(RelayServerLive, HeartbeatLive, RenewalLive, CertificateExpiryLive).pipe(
      Layer.provide(CredentialsLive),
      Layer.provide(controlPlane),
      Layer.provide(RelayConfig.layer(config))
    )

/**
 * Start a relay inside the current scope: the status server first (so a stuck registration is
 * visible), then the relay's layers; ready once both listeners are bound. SIGHUP reloads the
 * limits file from the start on (it never stops the process, whatever phase the relay is in).
 */
export const startRelayLayers = <E, R>(config: RelayConfigShape, layer: Layer.Layer<never, E, R>) =>
  Effect.gen(function* () {
    const readiness = yield* Readiness.make
    const withReadiness = Layer.succeed(Readiness, readiness)
    if (Option.isSome(config.statusAddress)) {
      yield* Layer.build(StatusServerLive(config.statusAddress.value).pipe(Layer.provide(withReadiness)))
    }
    const drain = yield* Drain.make
    const limitsSource = config.limits ?? defaultLimitsSource
    const limits = yield* makeLimits(limitsSource.initial)
    yield* reloadLimitsOnSighup(limits, limitsSource)
    yield* Layer.build(layer.pipe(Layer.provide(Layer.mergeAll(Layer.succeed(Drain, drain), Layer.succeed(Limits, limits)))))
    // Added after the relay's layers, so it runs before any of them is torn down.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* readiness.markDraining
        yield* drain.stopAccepting
        yield* Effect.logInfo("Shutting down relay server: not accepting, waiting for live sessions").pipe(
          Effect.annotateLogs({ drainTimeout: Duration.format(config.drainTimeout) })
        )
        const drained = yield* drain.awaitIdle(config.drainTimeout)
        yield* Effect.logInfo(drained ? "All sessions finished" : "Drain timeout reached, closing remaining sessions")
      })
    )
    yield* readiness.markReady
    // The effective limits go in the start-up line rather than in /metrics (kept lean).
    yield* Effect.logInfo("Relay server started successfully").pipe(
      Effect.annotateLogs({ limits: describeLimits(yield* limits.get) })
    )
    // systemd (Type=notify): READY=1 now, STOPPING=1 first thing at shutdown; only with NOTIFY_SOCKET.
    yield* notifyReadyUntilStopping
    return readiness
  })

/** What `relay start` runs. */
export const relayLayer = relayLayerWith(ControlPlaneWithAuthLive)
