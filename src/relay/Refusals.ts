/**
 * Refusals by an admission limit: counted at almost no cost (a synchronous counter update on the
 * accept path, no fiber, no log line) and announced by at most one warning per cap per minute, so
 * a flood never floods the logs. Individual refusals are logged at debug where a fiber runs anyway.
 */
import { Metric } from "effect"
import { connectionsRefused, tagged } from "../observability/Metrics.ts"

export type ListenerName = "ssh" | "tls"
export type ConnectionRefusal = "max_connections" | "accept_rate" | "handshake_timeout"

const counters = new Map<string, Metric.Metric.Counter<number>>()

/** relay_connections_refused_total{listener, reason} += 1, synchronously. */
export const countConnectionRefused = (listener: ListenerName, reason: ConnectionRefusal): void => {
  const key = `${listener}/${reason}`
  let counter = counters.get(key)
  if (counter === undefined) {
    counter = tagged(tagged(connectionsRefused, "listener", listener), "reason", reason)
    counters.set(key, counter)
  }
  counter.unsafeUpdate(1, [])
}

/** `due(key)` is true at most once per `intervalMs` for each key (keys are a fixed set of caps). */
export const makeWarningThrottle = (intervalMs = 60_000) => {
  const last = new Map<string, number>()
  return (key: string): boolean => {
    const now = Date.now()
    const previous = last.get(key)
    if (previous !== undefined && now - previous < intervalMs) return false
    last.set(key, now)
    return true
  }
}
