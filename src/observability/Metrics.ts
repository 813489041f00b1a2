/**
 * The relay's metrics, in Effect's Metric model; the status server exposes them in Prometheus
 * text. Names follow Prometheus conventions (`_total` counters, base units).
 */
import { Metric } from "effect"

export const tunnelsConnected = Metric.gauge("relay_tunnels_connected", {
  description: "Gateway SSH tunnels currently registered"
})

/** accepted | duplicate_rejected | stale_replaced | max_tunnels */
export const tunnelConnections = Metric.counter("relay_tunnel_connections_total", {
  description: "Authenticated gateway SSH connections by outcome",
  incremental: true
})

/** Failed SSH authentication attempts, tagged by reason. */
export const sshAuthFailures = Metric.counter("relay_ssh_auth_failures_total", {
  description: "Failed SSH authentication attempts by reason",
  incremental: true
})

/** SSH connections that ended before authenticating. */
export const sshHandshakeFailures = Metric.counter("relay_ssh_handshake_failures_total", {
  description: "SSH connections that closed before authentication",
  incremental: true
})

export const tlsHandshakeFailures = Metric.counter("relay_tls_handshake_failures_total", {
  description: "TLS connections that closed before completing the handshake",
  incremental: true
})

/** heartbeat probes answered by the TLS listener */
export const heartbeatProbes = Metric.counter("relay_heartbeat_probes_total", {
  description: "Control-plane heartbeat probes received on the TLS port",
  incremental: true
})

/**
 * TCP connections refused by an admission limit, tagged listener=ssh|tls and
 * reason=max_connections|accept_rate|handshake_timeout.
 */
export const connectionsRefused = Metric.counter("relay_connections_refused_total", {
  description: "Connections refused or closed by an admission limit, by listener and reason",
  incremental: true
})

/** Tunnels closed because their gateway's user certificate expired (--disconnect-expired-tunnels). */
export const tunnelsExpired = Metric.counter("relay_tunnels_expired_total", {
  description: "Gateway tunnels closed at the expiry of their certificate",
  incremental: true
})

/** SIGHUP reloads of the limits file, tagged outcome=success|failure. */
export const configReloads = Metric.counter("relay_config_reloads_total", {
  description: "Reloads of the limits file by outcome",
  incremental: true
})

/** Client connections refused after the handshake, tagged by reason. */
export const sessionsRefused = Metric.counter("relay_sessions_refused_total", {
  description: "Client connections closed without a session, by reason",
  incremental: true
})

export const sessionsActive = Metric.gauge("relay_sessions_active", {
  description: "Routed sessions currently pumping"
})

export const sessionsTotal = Metric.counter("relay_sessions_total", {
  description: "Routed sessions started",
  incremental: true
})

/** Bytes carried, tagged direction=client_to_gateway | gateway_to_client. */
export const sessionBytes = Metric.counter("relay_session_bytes_total", {
  description: "Bytes carried between clients and gateways",
  incremental: true
})

export const tagged = <T extends Metric.Metric<any, any, any>>(metric: T, key: string, value: string): T => {
  // One tagged metric per (metric, tag): a tagged metric caches its registry entry, a fresh one
  // looks it up by hashing its whole key on every update (measured: ~2% of a new session's CPU).
  let byTag = taggedCache.get(metric)
  if (byTag === undefined) taggedCache.set(metric, byTag = new Map())
  const id = `${key}\u0000${value}`
  let one = byTag.get(id)
  if (one === undefined) byTag.set(id, one = Metric.tagged(metric, key, value))
  return one as T
}
const taggedCache = new WeakMap<Metric.Metric<any, any, any>, Map<string, Metric.Metric<any, any, any>>>()
