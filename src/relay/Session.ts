/**
 * One client session on the TLS listener, from a completed handshake to its end (protocol.md §4.2
 * steps 3-5): check the client certificate, route by its CN (the zero UUID is the control plane's
 * heartbeat probe), take a session slot, open a `direct-tcpip` channel on the gateway's tunnel and
 * pump bytes until either side ends. Every refusal closes the connection without writing a byte.
 *
 * Plain callbacks, no fiber: this runs for every session, hundreds a second, and a fiber per
 * session cost about a quarter of the relay's CPU per new session (see docs/benchmarks.md). The
 * listener (TlsListener.ts) tracks sessions for drain and shutdown, and turns the outcome into
 * counters, span attributes and, when one is due, a log line.
 */
import type * as tls from "node:tls"
import { Duration } from "effect"
import { sessionsActive, sessionsTotal } from "../observability/Metrics.ts"
import { isHeartbeatProbe, parseClientIdentityEither } from "../pki/clientIdentity.ts"
import { ChannelLimitError } from "../ssh/server.ts"
import type { FairShare } from "./FairShare.ts"
import type { RelayLimits } from "./Limits.ts"
import { type PumpResult, startPump } from "./pump.ts"
import type { SessionSlots, SlotRefusal } from "./SessionSlots.ts"
import type { Tunnel } from "./Tunnels.ts"

/** Who a routed session is for, from its client certificate. */
export interface Route {
  readonly gatewayId: string
  /** The certificate's gateway name, "" when it has none. */
  readonly gatewayName: string
  /** The certificate's org label, "" when it has none. */
  readonly org: string
}

export type RouteRefusal = "invalid_gateway_name" | "gateway_not_connected" | "max_channels" | "channel_open_failed" | SlotRefusal

/** How a session ended, or why it never started. */
export type SessionOutcome =
  /** The certificate did not verify against the client chain. */
  | { readonly _tag: "Unauthorized"; readonly reason: string }
  /** A verified certificate without a usable subject. */
  | { readonly _tag: "NoIdentity" }
  | { readonly _tag: "HeartbeatProbe" }
  | { readonly _tag: "Refused"; readonly reason: RouteRefusal; readonly route: Route }
  | {
    readonly _tag: "Ended"
    readonly route: Route
    readonly result: PumpResult
    /** From the channel open to the gateway's confirmation. */
    readonly channelOpenMs: number
    /** From the channel open (right after the handshake) to the end. */
    readonly durationMs: number
  }

export interface SessionContext {
  readonly findTunnel: (gatewayId: string) => Tunnel | undefined
  readonly slots: SessionSlots
  readonly limits: () => RelayLimits
  readonly fairShare: FairShare
}

/** How long a closing connection may take to flush its last TLS records before it is dropped. */
const CLOSE_FLUSH_MS = 5_000

/**
 * Close a connection whose handshake completed, as Go's `tls.Conn.Close` does: whatever TLS still
 * has to send goes out first (in TLS 1.2 the server's Finished is still queued when
 * 'secureConnection' fires: destroying at once would fail the client's handshake, and with it the
 * control plane's heartbeat probe), then close_notify, then the socket is closed. No application
 * byte is ever written.
 */
export const closeAfterHandshake = (socket: tls.TLSSocket) => {
  if (socket.destroyed) return
  const timer = setTimeout(() => socket.destroy(), CLOSE_FLUSH_MS)
  timer.unref()
  socket.once("close", () => clearTimeout(timer))
  socket.destroySoon()
}

const nothingToCancel = () => {}

/**
 * Run one session on a socket whose TLS handshake completed. `onEnd` is called exactly once, with
 * the outcome, once the connection is closed or closing. The returned function cancels the
 * session (the socket and the channel are destroyed, the slot given back; `onEnd` is not called).
 */
export const startSession = (
  socket: tls.TLSSocket,
  context: SessionContext,
  onEnd: (outcome: SessionOutcome) => void
): (() => void) => {
  if (!socket.authorized) {
    // Dropped at once, not flushed: a TLS 1.2 client then sees its handshake fail (its last
    // flight from us is still queued), the closest Node gets to Go's bad_certificate alert.
    socket.destroy()
    onEnd({ _tag: "Unauthorized", reason: String(socket.authorizationError ?? "unauthorized") })
    return nothingToCancel
  }
  const der = socket.getPeerX509Certificate()?.raw
  const parsed = der ? parseClientIdentityEither(der) : undefined
  if (!parsed || parsed._tag === "Left" || parsed.right.gatewayId === undefined) {
    closeAfterHandshake(socket)
    onEnd({ _tag: "NoIdentity" })
    return nothingToCancel
  }
  const identity = parsed.right
  if (isHeartbeatProbe(identity)) {
    closeAfterHandshake(socket)
    onEnd({ _tag: "HeartbeatProbe" })
    return nothingToCancel
  }
  const name = identity.gatewayName
  const route: Route = {
    gatewayId: identity.gatewayId!,
    gatewayName: name._tag === "Valid" ? name.name : "",
    org: identity.orgLabel ?? ""
  }
  const refuse = (reason: RouteRefusal) => {
    closeAfterHandshake(socket)
    onEnd({ _tag: "Refused", reason, route })
  }
  if (name._tag === "Invalid") {
    refuse("invalid_gateway_name")
    return nothingToCancel
  }
  const tunnel = context.findTunnel(route.gatewayId)
  if (tunnel === undefined) {
    refuse("gateway_not_connected")
    return nothingToCancel
  }
  const limits = context.limits()
  const slotRefusal = context.slots.acquire(route.org, route.gatewayId, limits)
  if (slotRefusal !== undefined) {
    refuse(slotRefusal)
    return nothingToCancel
  }

  // From here the session holds a slot: given back exactly once, however the session ends.
  let over = false
  let pumping = false
  let stopPump: (() => void) | undefined
  const end = () => {
    if (over) return false
    over = true
    context.slots.release(route.org, route.gatewayId)
    if (pumping) sessionsActive.unsafeModify(-1, [])
    return true
  }
  const openedAt = performance.now()
  tunnel.openChannel().then(
    (channel) => {
      if (over) return void channel.destroy()
      const channelOpenMs = performance.now() - openedAt
      sessionsTotal.unsafeUpdate(1, [])
      sessionsActive.unsafeModify(1, [])
      pumping = true
      // May end at once (onEnd before startPump returns): a tunnel gone in the confirming read.
      stopPump = startPump(socket, channel, {
        org: route.org,
        gatewayId: route.gatewayId,
        idleTimeoutMs: Duration.toMillis(limits.sessionIdleTimeout),
        ...(limits.fairShare ? { fairShare: context.fairShare } : {})
      }, (result) => {
        if (end()) onEnd({ _tag: "Ended", route, result, channelOpenMs, durationMs: performance.now() - openedAt })
      })
    },
    (cause: unknown) => {
      if (end()) refuse(cause instanceof ChannelLimitError ? "max_channels" : "channel_open_failed")
    }
  )
  return () => {
    if (stopPump !== undefined) stopPump()
    else socket.destroy()
    end()
  }
}
