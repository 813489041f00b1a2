/**
 * Who is calling, as upstream's auth plugins decide it (`inject-identity.ts`, `verify-auth.ts`,
 * and the instance routes' own shared-secret check):
 *
 * - a bearer JWT is verified on every route that has an Authorization header (bad → 403 TokenError);
 * - routes then require one of their auth modes: none → 401 `Token missing`, another mode →
 *   403 `Forbidden access to <url>`;
 * - the instance relay routes skip all that and compare the header with `RELAY_AUTH_SECRET`.
 */
import { timingSafeEqual } from "node:crypto"
import { Effect } from "effect"
import type { Backend } from "./backend.ts"
import { type ApiError, forbidden, tokenError, unauthorized } from "./errors.ts"
import { IDENTITY_ACCESS_TOKEN, RELAY_ACCESS_TOKEN, validateIdentityToken } from "./identities.ts"
import { verifyJwt } from "./jwt.ts"
import type { Identity, Org, Relay } from "./store.ts"

export type Actor =
  | { readonly _tag: "Identity"; readonly identity: Identity; readonly org: Org }
  | { readonly _tag: "Relay"; readonly relay: Relay }

export type AuthMode = Actor["_tag"]

/** The caller behind an Authorization header; undefined when there is none (or an unknown token type). */
export const extractActor = (
  be: Backend,
  authorization: string | undefined
): Effect.Effect<Actor | undefined, ApiError> =>
  Effect.gen(function*() {
    if (authorization === undefined) return undefined
    // upstream: `authHeader.slice(7)`, whatever the scheme.
    const verified = verifyJwt(authorization.slice(7), be.authSecret, be.options.now())
    if (verified._tag === "Left") return yield* tokenError(verified.left)
    const payload = verified.right
    switch (payload["authTokenType"]) {
      case IDENTITY_ACCESS_TOKEN: {
        const { identity, org } = yield* validateIdentityToken(be, payload)
        return { _tag: "Identity", identity, org } as const
      }
      case RELAY_ACCESS_TOKEN: {
        const relay = be.store.relays.get(String(payload["relayId"]))
        if (relay === undefined) return yield* unauthorized("Relay not found")
        if (relay.tokenVersion !== payload["tokenVersion"]) {
          return yield* unauthorized("Relay access token has been revoked")
        }
        return { _tag: "Relay", relay } as const
      }
      default:
        return undefined
    }
  })

/** `verifyAuth([...modes])`. */
export const requireActor = <M extends AuthMode>(
  actor: Actor | undefined,
  modes: ReadonlyArray<M>,
  url: string
): Effect.Effect<Extract<Actor, { readonly _tag: M }>, ApiError> => {
  if (actor === undefined) return Effect.fail(unauthorized("Token missing"))
  if (!(modes as ReadonlyArray<AuthMode>).includes(actor._tag)) {
    return Effect.fail(forbidden(undefined, `Forbidden access to ${url}`))
  }
  return Effect.succeed(actor as Extract<Actor, { readonly _tag: M }>)
}

const headerMatchesSecret = (header: string, secret: string): boolean => {
  const expected = Buffer.from(`Bearer ${secret}`)
  const given = Buffer.from(header)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

/** `register-instance-relay`: one answer for every failure. */
export const checkInstanceSecretForRegistration = (be: Backend, authorization: string | undefined) => {
  const secret = be.options.relayAuthSecret
  return secret !== undefined && authorization !== undefined && headerMatchesSecret(authorization, secret)
    ? Effect.void
    : Effect.fail(unauthorized("Invalid relay auth secret"))
}

/** `heartbeat-instance-relay`: distinct messages per failure. */
export const checkInstanceSecretForHeartbeat = (be: Backend, authorization: string | undefined) => {
  const secret = be.options.relayAuthSecret
  if (secret === undefined) return Effect.fail(unauthorized("Relay authentication not configured"))
  if (authorization === undefined) return Effect.fail(unauthorized("Missing authorization header"))
  return headerMatchesSecret(authorization, secret) ? Effect.void : Effect.fail(unauthorized("Invalid relay auth secret"))
}
