/**
 * Keeps a machine-identity access token fresh, with the Infisical SDK's renew-or-relogin policy
 * (protocol.md §7), as a fiber owned by the caller's scope:
 *
 * - The token is due `expiresIn - 5 s` after it was fetched (and, with a max TTL, no later than
 *   `accessTokenMaxTTL - 5 s` after the first login of the chain); never earlier than 1 s.
 * - When due: if the max-TTL window left is shorter than `expiresIn`, log in again; otherwise
 *   `POST /v1/auth/token/renew` (no Authorization header) and, if that fails, log in again.
 * - A failed re-login is logged and retried with jittered exponential backoff (1 s, capped at
 *   5 min); the current token stays in use meanwhile.
 * - `expiresIn = 0` means the token never expires: nothing to do. `accessTokenMaxTTL = 0` means no
 *   max TTL: renew forever.
 *
 * The token lives in a SubscriptionRef: a new one replaces the old atomically, and every request
 * built after that reads the new one.
 */
import { Clock, Duration, Effect, Redacted, Schedule, type Scope, Stream, SubscriptionRef } from "effect"
import type { IdentityAccessTokenResponse } from "../controlplane/Api.ts"
import { type IdentityAuthClient, IdentityLoginError } from "./identityLogin.ts"

export interface TokenState {
  readonly grant: IdentityAccessTokenResponse
  /** When the current login chain started (renewals keep it, a re-login resets it). */
  readonly firstFetchedMs: number
  readonly lastFetchedMs: number
}

export interface RefreshingToken {
  readonly current: Effect.Effect<Redacted.Redacted<string>>
  /** Every token swapped in after the first. */
  readonly changes: Stream.Stream<Redacted.Redacted<string>>
  readonly state: Effect.Effect<TokenState>
}

/** Backoff of a failed re-login: 1 s, 2 s, 4 s, ... jittered, never more than 5 min apart. */
export const reloginBackoff = Schedule.exponential("1 second").pipe(
  Schedule.jittered,
  Schedule.union(Schedule.spaced("5 minutes"))
)

const RENEW_BUFFER_SECONDS = 5

/** When the token in `state` is due for renewal or re-login (epoch ms). */
export const dueAt = (state: TokenState): number => {
  const { accessTokenMaxTTL, expiresIn } = state.grant
  let due = state.lastFetchedMs + Math.max(expiresIn - RENEW_BUFFER_SECONDS, 1) * 1000
  if (accessTokenMaxTTL > 0) {
    due = Math.min(due, state.firstFetchedMs + Math.max(accessTokenMaxTTL - RENEW_BUFFER_SECONDS, 1) * 1000)
  }
  return due
}

/** Renewing would outlive the max TTL (or nearly does): the SDK logs in again instead. */
export const mustRelogin = (state: TokenState, nowMs: number): boolean => {
  const { accessTokenMaxTTL, expiresIn } = state.grant
  if (accessTokenMaxTTL <= 0) return false
  const leftMs = accessTokenMaxTTL * 1000 - (nowMs - state.firstFetchedMs)
  return leftMs < expiresIn * 1000
}

/**
 * Log in once (failing if that fails), then keep the token fresh in a fiber of the current scope.
 */
export const makeRefreshingToken = (
  client: IdentityAuthClient
): Effect.Effect<RefreshingToken, IdentityLoginError, Scope.Scope> =>
  Effect.gen(function* () {
    const first = yield* client.login
    if (Redacted.value(first.accessToken) === "") {
      return yield* new IdentityLoginError({ detail: "no access token found" })
    }
    const startedAt = yield* Clock.currentTimeMillis
    const ref = yield* SubscriptionRef.make<TokenState>({ grant: first, firstFetchedMs: startedAt, lastFetchedMs: startedAt })

    const relogin = client.login.pipe(
      Effect.tapError((e) => Effect.logWarning(`Failed to re-authenticate: ${e.message}`)),
      Effect.retry(reloginBackoff),
      // The backoff never gives up; this only tells the type checker so.
      Effect.orElse(() => Effect.never),
      Effect.flatMap((grant) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          SubscriptionRef.set(ref, { grant, firstFetchedMs: now, lastFetchedMs: now })
        )
      ),
      Effect.tap(() => Effect.logDebug("Machine identity logged in again"))
    )

    const refreshOnce = Effect.gen(function* () {
      const state = yield* SubscriptionRef.get(ref)
      const now = yield* Clock.currentTimeMillis
      if (mustRelogin(state, now)) return yield* relogin
      const renewed = yield* Effect.either(client.renew(state.grant.accessToken))
      if (renewed._tag === "Left") {
        yield* Effect.logWarning(`Failed to renew access token: ${renewed.left.message}. Attempting to re-authenticate.`)
        return yield* relogin
      }
      const at = yield* Clock.currentTimeMillis
      yield* SubscriptionRef.set(ref, { grant: renewed.right, firstFetchedMs: state.firstFetchedMs, lastFetchedMs: at })
      yield* Effect.logDebug("Machine identity access token renewed")
    })

    const loop: Effect.Effect<never> = Effect.gen(function* () {
      const state = yield* SubscriptionRef.get(ref)
      // A token without expiry needs no care.
      if (state.grant.expiresIn <= 0) return yield* Effect.never
      const now = yield* Clock.currentTimeMillis
      yield* Effect.sleep(Duration.millis(Math.max(dueAt(state) - now, 1000)))
      yield* refreshOnce
    }).pipe(Effect.forever, Effect.withSpan("Auth.tokenRefresh"))

    yield* loop.pipe(Effect.forkScoped, Effect.interruptible)

    return {
      current: Effect.map(SubscriptionRef.get(ref), (s) => s.grant.accessToken),
      changes: ref.changes.pipe(Stream.drop(1), Stream.map((s) => s.grant.accessToken)),
      state: SubscriptionRef.get(ref)
    }
  })
