/**
 * What a session's outcome (Session.ts) leaves behind: its counters, the attributes and end of
 * its relay.session span, and the log line due at the configured level, if any. Counters and
 * span are plain synchronous updates; only a log line needs a fiber, and the caller runs it.
 */
import { Effect, Exit, type Tracer } from "effect"
import { heartbeatProbes, sessionBytes, sessionsRefused, tagged, tlsHandshakeFailures } from "../observability/Metrics.ts"
import { makeWarningThrottle } from "./Refusals.ts"
import type { Route, RouteRefusal, SessionOutcome } from "./Session.ts"

const bytesUp = tagged(sessionBytes, "direction", "client_to_gateway")
const bytesDown = tagged(sessionBytes, "direction", "gateway_to_client")

export interface SessionReportOptions {
  /** Debug lines are built only when the minimum log level lets them through. */
  readonly debugLogs: boolean
  /** Live sessions, for the session-cap warning. */
  readonly sessionsHeld: () => number
  /** The span clock. */
  readonly now: () => bigint
}

/** Returns `report(outcome, span)`: counts, ends the span, and returns the log line due. */
export const makeSessionReport = ({ debugLogs, sessionsHeld, now }: SessionReportOptions) => {
  const warnDue = makeWarningThrottle()

  /** Count the outcome and put it on the span; returns the log line due, if any. */
  const record = (outcome: SessionOutcome, span: Tracer.Span): Effect.Effect<void> | undefined => {
    switch (outcome._tag) {
      case "Unauthorized":
        tagged(tlsHandshakeFailures, "reason", outcome.reason).unsafeUpdate(1, [])
        span.attribute("relay.refused", "unauthorized")
        return debugLogs ? Effect.logDebug("TLS client certificate refused").pipe(Effect.annotateLogs({ reason: outcome.reason })) : undefined
      case "NoIdentity":
        tagged(sessionsRefused, "reason", "bad_certificate").unsafeUpdate(1, [])
        span.attribute("relay.refused", "bad_certificate")
        return debugLogs ? Effect.logDebug("Client certificate without a usable subject, closing") : undefined
      case "HeartbeatProbe":
        heartbeatProbes.unsafeUpdate(1, [])
        span.attribute("relay.heartbeat_probe", true)
        return debugLogs ? Effect.logDebug("Heartbeat check successful, closing connection.") : undefined
      case "Refused": {
        const { reason, route } = outcome
        tagged(sessionsRefused, "reason", reason).unsafeUpdate(1, [])
        span.attribute("relay.gateway_id", route.gatewayId)
        span.attribute("relay.refused", reason)
        return logRefusal(reason, route)?.pipe(Effect.annotateLogs({ gatewayId: route.gatewayId, org: route.org }))
      }
      case "Ended": {
        const { route, result } = outcome
        bytesUp.unsafeUpdate(result.bytesUp, [])
        bytesDown.unsafeUpdate(result.bytesDown, [])
        span.attribute("relay.gateway_id", route.gatewayId)
        span.attribute("relay.org", route.org)
        span.attribute("relay.channel_open_ms", outcome.channelOpenMs)
        span.attribute("relay.bytes_up", result.bytesUp)
        span.attribute("relay.bytes_down", result.bytesDown)
        span.attribute("relay.close_reason", result.reason)
        return debugLogs
          ? Effect.logDebug("Session closed").pipe(Effect.annotateLogs({
            gatewayId: route.gatewayId,
            org: route.org,
            bytesUp: result.bytesUp,
            bytesDown: result.bytesDown,
            reason: result.reason,
            durationMs: Math.round(outcome.durationMs)
          }))
          : undefined
      }
    }
  }

  const logRefusal = (reason: RouteRefusal, { gatewayId, gatewayName }: Route): Effect.Effect<void> | undefined => {
    switch (reason) {
      case "invalid_gateway_name":
        return Effect.logInfo("Invalid gateway name in client certificate, closing")
      case "gateway_not_connected":
        return Effect.logInfo(`Gateway '${gatewayName}' (${gatewayId}) not connected`)
      case "channel_open_failed":
        return Effect.logInfo(`Failed to open a channel to gateway '${gatewayName}' (${gatewayId})`)
      case "max_channels":
        return warnDue(reason)
          ? Effect.logWarning(`Gateway '${gatewayName}' (${gatewayId}) is at --max-channels-per-tunnel; further refusals are counted, not logged`)
          : undefined
      default: {
        // A session cap: one warning per cap per minute, and each refusal at debug.
        const warning = warnDue(reason)
          ? Effect.logWarning(`Session refused (${reason}): a session cap is reached; further refusals are counted, not logged`).pipe(
            Effect.annotateLogs({ sessions: sessionsHeld() })
          )
          : undefined
        const each = debugLogs ? Effect.logDebug("Session refused by a session cap").pipe(Effect.annotateLogs({ reason })) : undefined
        return warning && each ? Effect.zipRight(warning, each) : warning ?? each
      }
    }
  }

  return (outcome: SessionOutcome, span: Tracer.Span): Effect.Effect<void> | undefined => {
    const line = record(outcome, span)
    span.end(now(), Exit.void)
    return line
  }
}
