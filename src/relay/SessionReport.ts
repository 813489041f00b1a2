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

  /** An outcome's counters: plain updates, no fiber. */
  const count = (outcome: SessionOutcome) => {
    switch (outcome._tag) {
      case "Unauthorized":
        return tagged(tlsHandshakeFailures, "reason", outcome.reason).unsafeUpdate(1, [])
      case "NoIdentity":
        return tagged(sessionsRefused, "reason", "bad_certificate").unsafeUpdate(1, [])
      case "HeartbeatProbe":
        return heartbeatProbes.unsafeUpdate(1, [])
      case "Refused":
        return tagged(sessionsRefused, "reason", outcome.reason).unsafeUpdate(1, [])
      case "Ended":
        bytesUp.unsafeUpdate(outcome.result.bytesUp, [])
        bytesDown.unsafeUpdate(outcome.result.bytesDown, [])
    }
  }

  const endSpan = (span: Tracer.Span, outcome: SessionOutcome) => {
    switch (outcome._tag) {
      case "Ended": {
        const { route, result } = outcome
        span.attribute("relay.gateway_id", route.gatewayId)
        span.attribute("relay.org", route.org)
        span.attribute("relay.channel_open_ms", outcome.channelOpenMs)
        span.attribute("relay.bytes_up", result.bytesUp)
        span.attribute("relay.bytes_down", result.bytesDown)
        span.attribute("relay.close_reason", result.reason)
        break
      }
      case "Refused":
        span.attribute("relay.gateway_id", outcome.route.gatewayId)
        span.attribute("relay.refused", outcome.reason)
        break
      case "Unauthorized":
        span.attribute("relay.refused", "unauthorized")
        break
      case "NoIdentity":
        span.attribute("relay.refused", "bad_certificate")
        break
      case "HeartbeatProbe":
        span.attribute("relay.heartbeat_probe", true)
    }
    span.end(now(), Exit.void)
  }

  /** An outcome's log line, when one is due at the configured level. */
  const logLine = (outcome: SessionOutcome): Effect.Effect<void> | undefined => {
    switch (outcome._tag) {
      case "Unauthorized":
        return debugLogs ? Effect.logDebug("TLS client certificate refused").pipe(Effect.annotateLogs({ reason: outcome.reason })) : undefined
      case "NoIdentity":
        return debugLogs ? Effect.logDebug("Client certificate without a usable subject, closing") : undefined
      case "HeartbeatProbe":
        return debugLogs ? Effect.logDebug("Heartbeat check successful, closing connection.") : undefined
      case "Refused":
        return logRefusal(outcome.reason, outcome.route)?.pipe(
          Effect.annotateLogs({ gatewayId: outcome.route.gatewayId, org: outcome.route.org })
        )
      case "Ended": {
        const { route, result } = outcome
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
    count(outcome)
    endSpan(span, outcome)
    return logLine(outcome)
  }
}
