/**
 * The relay's layer graph, composed in one place. `relay start` runs `relayLayer(config)`; tests
 * run the same function with a swapped control plane. Platform layers (HTTP client, file system)
 * are provided by the entry point.
 */
import { Layer } from "effect"
import { AuthLive } from "./Auth.ts"
import { type ControlPlane, ControlPlaneLive } from "./controlplane/ControlPlane.ts"
import { CredentialsLive } from "./Credentials.ts"
import { HeartbeatLive } from "./Heartbeat.ts"
import { RelayConfig, type RelayConfigShape } from "./RelayConfig.ts"
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
    Layer.mergeAll(RelayServerLive, HeartbeatLive).pipe(
      Layer.provide(CredentialsLive),
      Layer.provide(controlPlane),
      Layer.provide(RelayConfig.layer(config))
    )

/** What `relay start` runs. */
export const relayLayer = relayLayerWith(ControlPlaneWithAuthLive)
