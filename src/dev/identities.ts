/**
 * Machine identities and their access tokens (protocol.md §7; upstream `identity-ua-service.ts`,
 * `identity-access-token-service.ts`): universal-auth login, the JWT-based logins behind a
 * pluggable verifier, token renewal, and the TTL rules applied when a token is used.
 */
import { randomBytes } from "node:crypto"
import { Effect } from "effect"
import type { Backend } from "./backend.ts"
import { type ApiError, badRequest, notFound, tokenError, unauthorized } from "./errors.ts"
import { signJwt, verifyJwt } from "./jwt.ts"
import type { JwtLoginMethod } from "./options.ts"
import { type AccessTokenRecord, type Identity, Store } from "./store.ts"
import { BodyReader } from "./validate.ts"

/** upstream `AuthTokenType` values carried in the JWTs. */
export const IDENTITY_ACCESS_TOKEN = "identityAccessToken"
export const RELAY_ACCESS_TOKEN = "relayAccessToken"

/** Universal auth's defaults on a new identity: 30 days for both. */
export const DEFAULT_ACCESS_TOKEN_TTL = 2_592_000

export interface CreateIdentityInput {
  readonly name?: string
  /** Default: the control plane's default organisation. */
  readonly orgId?: string
  readonly clientId?: string
  readonly clientSecret?: string
  /** Seconds; 0 = tokens never expire. Default 30 days. */
  readonly accessTokenTTL?: number
  /** Seconds; 0 = no max. Default 30 days. */
  readonly accessTokenMaxTTL?: number
  /** Accepted by the default verifier of the kubernetes/azure/gcp/oidc/jwt logins. */
  readonly jwt?: string
}

export interface IdentityCredentials {
  readonly identityId: string
  readonly orgId: string
  readonly name: string
  readonly clientId: string
  readonly clientSecret: string
}

/** The body of every login and of `token/renew`. */
export interface AccessTokenGrant {
  readonly accessToken: string
  readonly expiresIn: number
  readonly accessTokenMaxTTL: number
  readonly tokenType: "Bearer"
}

export const createIdentity = (be: Backend, input: CreateIdentityInput = {}): Effect.Effect<IdentityCredentials, ApiError> =>
  Effect.suspend(() => {
    const orgId = input.orgId ?? be.defaultOrg.id
    if (!be.store.orgs.has(orgId)) return Effect.fail(notFound(`Organization with ID ${orgId} not found`))
    const id = Store.newId()
    const identity: Identity = {
      id,
      orgId,
      name: input.name ?? `identity-${id.slice(0, 8)}`,
      clientId: input.clientId ?? Store.newId(),
      clientSecret: input.clientSecret ?? randomBytes(32).toString("hex"),
      accessTokenTTL: input.accessTokenTTL ?? DEFAULT_ACCESS_TOKEN_TTL,
      accessTokenMaxTTL: input.accessTokenMaxTTL ?? DEFAULT_ACCESS_TOKEN_TTL,
      jwt: input.jwt,
      createdAt: new Date(be.options.now())
    }
    be.store.identities.set(id, identity)
    return Effect.succeed({
      identityId: id,
      orgId,
      name: identity.name,
      clientId: identity.clientId,
      clientSecret: identity.clientSecret
    })
  })

const signAccessToken = (be: Backend, record: AccessTokenRecord): string =>
  signJwt(
    {
      identityId: record.identityId,
      clientSecretId: record.identityId,
      identityAccessTokenId: record.id,
      authTokenType: IDENTITY_ACCESS_TOKEN
    },
    be.authSecret,
    { nowMs: be.options.now(), expiresInSeconds: record.accessTokenTTL === 0 ? undefined : record.accessTokenTTL }
  )

/** A new access token row and its JWT (what every successful login returns). */
export const issueAccessToken = (be: Backend, identity: Identity, authMethod = "universal-auth"): AccessTokenGrant => {
  const record: AccessTokenRecord = {
    id: Store.newId(),
    identityId: identity.id,
    authMethod,
    accessTokenTTL: identity.accessTokenTTL,
    accessTokenMaxTTL: identity.accessTokenMaxTTL,
    createdAtMs: be.options.now(),
    lastRenewedAtMs: undefined,
    revoked: false
  }
  be.store.accessTokens.set(record.id, record)
  return {
    accessToken: signAccessToken(be, record),
    expiresIn: record.accessTokenTTL,
    accessTokenMaxTTL: record.accessTokenMaxTTL,
    tokenType: "Bearer"
  }
}

/** `POST /api/v1/auth/universal-auth/login {clientId, clientSecret}`. */
export const loginUniversalAuth = (be: Backend, body: unknown) =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const clientId = r.string("clientId", { trim: true })
    const clientSecret = r.string("clientSecret", { trim: true })
    yield* r.done
    const identity = be.store.identityByClientId(clientId)
    if (identity === undefined || identity.clientSecret !== clientSecret) {
      return yield* unauthorized("Invalid credentials")
    }
    return issueAccessToken(be, identity)
  })

const METHOD_LABEL: Record<JwtLoginMethod | "aws", string> = {
  kubernetes: "Kubernetes",
  azure: "Azure",
  gcp: "GCP",
  oidc: "OIDC",
  jwt: "JWT",
  aws: "AWS"
}

/**
 * `POST /api/v1/auth/{kubernetes,azure,gcp,oidc,jwt}-auth/login {identityId, jwt}` and
 * `aws-auth/login {identityId, iamHttpRequestMethod, iamRequestBody, iamRequestHeaders}`: the
 * credential check is the configured verifier (options.verifyIdentityLogin).
 */
export const loginWithVerifier = (be: Backend, method: JwtLoginMethod | "aws", body: unknown) =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const identityId = r.string("identityId", { trim: true })
    if (method === "aws") {
      r.optionalString("iamHttpRequestMethod", "POST")
      r.string("iamRequestBody")
      r.string("iamRequestHeaders")
    } else {
      r.string("jwt")
    }
    yield* r.done
    const identity = be.store.identities.get(identityId)
    if (identity === undefined) {
      return yield* notFound(
        `${METHOD_LABEL[method]} auth method not found for identity, did you configure ${METHOD_LABEL[method]} auth?`
      )
    }
    const verdict = yield* Effect.promise(async () => be.options.verifyIdentityLogin({ method, identity, body: r.raw }))
    if (!verdict.ok) return yield* unauthorized(verdict.message)
    return issueAccessToken(be, identity, `${method}-auth`)
  })

/** upstream `validateAccessTokenExp`: the TTL counts from the last renewal (or creation). */
const checkTtl = (be: Backend, record: AccessTokenRecord): Effect.Effect<void, ApiError> => {
  if (record.accessTokenTTL <= 0) return Effect.void
  const from = record.lastRenewedAtMs ?? record.createdAtMs
  if (be.options.now() > from + record.accessTokenTTL * 1000) {
    be.store.accessTokens.delete(record.id)
    return Effect.fail(unauthorized("Failed to renew MI access token due to TTL expiration"))
  }
  return Effect.void
}

/** The identity behind a bearer JWT already verified; upstream `fnValidateIdentityAccessToken`. */
export const validateIdentityToken = (be: Backend, payload: Readonly<Record<string, unknown>>) =>
  Effect.gen(function*() {
    const record = be.store.accessTokens.get(String(payload["identityAccessTokenId"]))
    if (record === undefined || record.revoked) return yield* unauthorized("No identity access token found")
    const identity = be.store.identities.get(record.identityId)
    const org = identity && be.store.orgs.get(identity.orgId)
    if (identity === undefined || org === undefined) {
      return yield* badRequest("Identity does not belong to this organization")
    }
    yield* checkTtl(be, record)
    return { identity, org, tokenId: record.id }
  })

/** `POST /api/v1/auth/token/renew {accessToken}` (no Authorization header). */
export const renewAccessToken = (be: Backend, body: unknown) =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const accessToken = r.string("accessToken", { trim: true })
    yield* r.done
    const verified = verifyJwt(accessToken, be.authSecret, be.options.now())
    if (verified._tag === "Left") return yield* tokenError(verified.left)
    if (verified.right["authTokenType"] !== IDENTITY_ACCESS_TOKEN) {
      return yield* badRequest("Only identity access tokens can be renewed")
    }
    const record = be.store.accessTokens.get(String(verified.right["identityAccessTokenId"]))
    if (record === undefined || record.revoked) return yield* unauthorized("No identity access token found")
    yield* checkTtl(be, record)
    const now = be.options.now()
    if (record.accessTokenMaxTTL > 0) {
      const maxExpiry = record.createdAtMs + record.accessTokenMaxTTL * 1000
      if (now > maxExpiry) {
        be.store.accessTokens.delete(record.id)
        return yield* unauthorized("Failed to renew MI access token due to Max TTL expiration")
      }
      if (now + record.accessTokenTTL * 1000 > maxExpiry) {
        be.store.accessTokens.delete(record.id)
        return yield* unauthorized("Failed to renew MI access token past its Max TTL expiration")
      }
    }
    record.lastRenewedAtMs = now
    const grant: AccessTokenGrant = {
      accessToken: signAccessToken(be, record),
      expiresIn: record.accessTokenTTL,
      accessTokenMaxTTL: record.accessTokenMaxTTL,
      tokenType: "Bearer"
    }
    return grant
  })
