/**
 * Tunnels: gateway id -> its live SSH connection. One tunnel per gateway (protocol.md §4.1).
 */
import type { Duplex } from "node:stream"
import { Context, Effect, Layer } from "effect"
import { capOf } from "./Limits.ts"

/** What the data plane needs from a gateway's SSH connection. */
export interface Tunnel {
  readonly gatewayId: string
  readonly gatewayName: string
  /** Open a `direct-tcpip` channel with empty type-specific data. */
  readonly openChannel: () => Promise<Duplex>
  /** A keepalive round trip; rejects if the gateway does not answer in time. */
  readonly ping: (timeoutMs: number) => Promise<void>
  readonly close: (reason: string) => void
}

export interface TunnelsShape {
  readonly get: (gatewayId: string) => Tunnel | undefined
  /**
   * Register a tunnel, unless the gateway already has one (that one is returned, nothing changes)
   * or `maxTunnels` gateways are registered already ("full"; 0 = no limit). A gateway that has a
   * tunnel is never "full": replacing its stale tunnel does not count twice.
   */
  readonly add: (tunnel: Tunnel, maxTunnels?: number) => Effect.Effect<Tunnel | "full" | undefined>
  /** Replace `old` by `tunnel` if `old` is still the registered one. */
  readonly replace: (old: Tunnel, tunnel: Tunnel) => Effect.Effect<boolean>
  readonly remove: (tunnel: Tunnel) => Effect.Effect<void>
  readonly size: Effect.Effect<number>
}

export class Tunnels extends Context.Tag("relay/Tunnels")<Tunnels, TunnelsShape>() {}

export const TunnelsLive = Layer.sync(Tunnels, () => {
  const byId = new Map<string, Tunnel>()
  return {
    get: (id) => byId.get(id),
    add: (tunnel, maxTunnels = 0) =>
      Effect.sync(() => {
        const existing = byId.get(tunnel.gatewayId)
        if (existing) return existing
        if (byId.size >= capOf(maxTunnels)) return "full" as const
        byId.set(tunnel.gatewayId, tunnel)
        return undefined
      }),
    replace: (old, tunnel) =>
      Effect.sync(() => {
        if (byId.get(tunnel.gatewayId) !== old) return false
        byId.set(tunnel.gatewayId, tunnel)
        return true
      }),
    remove: (tunnel) =>
      Effect.sync(() => {
        if (byId.get(tunnel.gatewayId) === tunnel) byId.delete(tunnel.gatewayId)
      }),
    size: Effect.sync(() => byId.size)
  }
})
