/**
 * Certificate renewal (protocol.md §6): repeat the mode's registration call (v1 register or v2
 * connect) and swap the new bundle in (Credentials.renew: atomic; new TLS handshakes and new SSH
 * connections use it, live ones keep theirs).
 *
 * - When: `renewEvery` after the last renewal (config; upstream's 6 h), or earlier when the TLS
 *   server certificate has less than a quarter of its lifetime left (it lives 24 h, so this only
 *   matters with a long `renewEvery` or after failures); never sooner than a minute apart.
 * - A failure logs `Failed to renew certificates: <cause>` and is retried with jittered exponential
 *   backoff (1 s, 2 s, 4 s, ... capped at 5 min) until it succeeds; it never stops the relay. The
 *   current certificates stay in use meanwhile.
 * - Logs as upstream: `Renewing certificates...`, `Certificates renewed successfully`, and
 *   `Certificate renewal goroutine stopping...` at shutdown.
 */
import { Clock, Duration, Effect, Layer, Metric, Schedule } from "effect"
import { type CredentialBundle, Credentials } from "./Credentials.ts"
import { recordOutcome, renewalLastSuccess, renewals } from "./observability/ControlPlaneMetrics.ts"
import { RelayConfig } from "./RelayConfig.ts"

/** Renew early once less than this fraction of the TLS certificate's lifetime is left. */
export const EARLY_RENEWAL_REMAINING_FRACTION = 0.25
/** Two renewals are at least this far apart, whatever the certificate says. */
export const MIN_RENEWAL_GAP = Duration.minutes(1)

/** Retry policy of a failed renewal: 1 s, 2 s, 4 s, ... jittered, never more than 5 min apart. */
export const renewalRetry = Schedule.exponential("1 second").pipe(
  Schedule.jittered,
  Schedule.union(Schedule.spaced("5 minutes"))
)

/** How long to wait before renewing `bundle`, at `nowMs`. */
export const renewalDelay = (bundle: CredentialBundle, renewEvery: Duration.Duration, nowMs: number): Duration.Duration => {
  const notBefore = bundle.tlsNotBefore.getTime()
  const notAfter = bundle.tlsNotAfter.getTime()
  const lifetime = notAfter - notBefore
  const periodic = Duration.toMillis(renewEvery)
  const early = lifetime > 0 ? notAfter - lifetime * EARLY_RENEWAL_REMAINING_FRACTION - nowMs : periodic
  return Duration.millis(Math.max(Math.min(periodic, early), Duration.toMillis(MIN_RENEWAL_GAP)))
}

export const RenewalLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const credentials = yield* Credentials
    yield* Metric.set(renewalLastSuccess, 0)

    const renewOnce = Effect.logInfo("Renewing certificates...").pipe(
      Effect.zipRight(
        recordOutcome(credentials.renew, renewals, renewalLastSuccess).pipe(
          Effect.tapError((e) => Effect.logError(`Failed to renew certificates: ${e.message}`)),
          Effect.retry(renewalRetry)
        )
      ),
      Effect.zipRight(Effect.logInfo("Certificates renewed successfully")),
      Effect.withSpan("relay.renewCertificates")
    )

    const cycle = Effect.gen(function* () {
      const bundle = yield* credentials.current
      const now = yield* Clock.currentTimeMillis
      yield* Effect.sleep(renewalDelay(bundle, config.renewEvery, now))
      yield* renewOnce
    })

    yield* cycle.pipe(
      Effect.forever,
      Effect.onInterrupt(() => Effect.logInfo("Certificate renewal goroutine stopping...")),
      Effect.forkScoped,
      Effect.interruptible
    )
  })
)
