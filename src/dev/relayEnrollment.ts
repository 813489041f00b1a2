/**
 * v2 relays (upstream `ee/routes/v2/relay-router.ts` and the resource-auth-method service): an
 * admin creates the relay with its host and auth method; the relay then logs in with a one-time
 * enrollment token or a signed AWS STS request and gets a relay access token (a JWT carrying a
 * tokenVersion: every login bumps it, so older tokens stop working), used for connect/heartbeat.
 */
import { createHash, randomBytes } from "node:crypto"
import { Effect } from "effect"
import type { Actor } from "./auth.ts"
import type { Backend } from "./backend.ts"
import { type ApiError, badRequest, notFound, unauthorized, validationFailure } from "./errors.ts"
import { RELAY_ACCESS_TOKEN } from "./identities.ts"
import { signJwt } from "./jwt.ts"
import { assertNameFree, newRelay, relayScope, relayServerCredentials } from "./relays.ts"
import { type EnrollmentToken, type Relay, type RelayAuthMethod, relayRow, Store } from "./store.ts"
import { BodyReader } from "./validate.ts"

type IdentityActor = Extract<Actor, { readonly _tag: "Identity" }>


export const ENROLLMENT_TOKEN_TTL_SECONDS = 3600
const DEFAULT_STS_ENDPOINT = "https://sts.amazonaws.com/"

const hashToken = (token: string): string => createHash("sha256").update(token).digest("hex")

const authMethodView = (relay: Relay) =>
  relay.authMethod?.method === "aws"
    ? {
      method: "aws" as const,
      config: {
        id: relay.id,
        stsEndpoint: relay.authMethod.stsEndpoint,
        allowedPrincipalArns: relay.authMethod.allowedPrincipalArns,
        allowedAccountIds: relay.authMethod.allowedAccountIds,
        createdAt: relay.createdAt.toISOString(),
        updatedAt: relay.updatedAt.toISOString()
      }
    }
    : { method: "token" as const, config: {} }

const hasPendingToken = (be: Backend, relay: Relay): boolean => {
  for (const token of be.store.enrollmentTokens.values()) if (token.relayId === relay.id) return true
  return false
}

/** The v2 relay view: `{id, identityId, name, host, createdAt, updatedAt, heartbeat, canRevoke, authMethod}`. */
export const relayV2View = (be: Backend, relay: Relay) => {
  const row = relayRow(relay)
  return {
    id: row.id,
    identityId: row.identityId,
    name: row.name,
    host: row.host,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    heartbeat: row.heartbeat,
    canRevoke: relay.tokenVersion > 0 || hasPendingToken(be, relay),
    authMethod: authMethodView(relay)
  }
}
export type RelayV2View = ReturnType<typeof relayV2View>

const readAuthMethod = (r: BodyReader): RelayAuthMethod => {
  const m = r.nested("authMethod")
  const method = m.raw["method"]
  if (method === "aws") {
    const stsEndpoint = m.optionalString("stsEndpoint", DEFAULT_STS_ENDPOINT, { trim: true, min: 1, max: 255 })
    const allowedPrincipalArns = m.optionalString("allowedPrincipalArns", "", { trim: true })
    const allowedAccountIds = m.optionalString("allowedAccountIds", "", { trim: true })
    if (allowedPrincipalArns.length === 0 && allowedAccountIds.length === 0) {
      m.custom("allowedPrincipalArns", "At least one of allowedPrincipalArns or allowedAccountIds must be set")
    }
    return { method: "aws", stsEndpoint, allowedPrincipalArns, allowedAccountIds }
  }
  if (method !== "token") {
    r.issue({ code: "invalid_union", message: "Invalid input", path: ["authMethod"] })
  }
  return { method: "token" }
}

export interface CreateRelayInput {
  readonly name: string
  readonly host: string
  readonly authMethod: RelayAuthMethod
}

/** Creates a v2 relay in an org (the programmatic side of `POST /v2/relays`). */
export const createRelay = (be: Backend, orgId: string, input: CreateRelayInput) =>
  Effect.gen(function*() {
    yield* assertNameFree(be, orgId, input.name)
    const relay = newRelay(be, { orgId, identityId: null, ...input })
    return relayV2View(be, relay)
  })

/** `POST /v2/relays {name, host, authMethod}`. */
export const createRelayFromRequest = (be: Backend, actor: IdentityActor, body: unknown) =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const name = r.slug("name", { min: 1, max: 32, field: "name" })
    const host = r.string("host", { trim: true, min: 1 })
    const authMethod = readAuthMethod(r)
    yield* r.done
    return yield* createRelay(be, actor.org.id, { name, host, authMethod })
  })

/** The org's v2 relay with this id (404 otherwise). */
export const orgRelay = (be: Backend, orgId: string, relayId: string): Effect.Effect<Relay, ApiError> => {
  const relay = be.store.relays.get(relayId)
  return relay !== undefined && relay.orgId === orgId
    ? Effect.succeed(relay)
    : Effect.fail(notFound(`Relay ${relayId} not found`))
}

/**
 * `POST /v2/relays/:relayId/token-auth/generate-enrollment-token`: `gwe_` + 32 random bytes
 * (base64url), stored as SHA-256, valid 1 h; minting replaces the relay's pending token.
 */
export const generateEnrollmentToken = (be: Backend, orgId: string, relayId: string) =>
  Effect.gen(function*() {
    const relay = yield* orgRelay(be, orgId, relayId)
    if (relay.authMethod?.method !== "token") {
      return yield* badRequest(
        `Relay is not configured for token authentication (current method: ${relay.authMethod?.method ?? "none"})`
      )
    }
    for (const [id, token] of be.store.enrollmentTokens) if (token.relayId === relay.id) be.store.enrollmentTokens.delete(id)
    const token = `gwe_${randomBytes(32).toString("base64url")}`
    const expiresAt = new Date(be.options.now() + ENROLLMENT_TOKEN_TTL_SECONDS * 1000)
    const id = Store.newId()
    be.store.enrollmentTokens.set(id, { id, relayId: relay.id, orgId, tokenHash: hashToken(token), expiresAt })
    return { token, expiresAt }
  })

export interface RelayLogin {
  readonly accessToken: string
  readonly relayId: string
  readonly tokenType: "Bearer"
}

/** A successful login bumps tokenVersion (older relay JWTs stop working) and mints a JWT without expiry. */
const completeLogin = (be: Backend, relay: Relay): RelayLogin => {
  relay.tokenVersion += 1
  relay.heartbeat = null
  relay.updatedAt = new Date(be.options.now())
  const accessToken = signJwt(
    { relayId: relay.id, orgId: relay.orgId, authTokenType: RELAY_ACCESS_TOKEN, tokenVersion: relay.tokenVersion },
    be.authSecret,
    { nowMs: be.options.now() }
  )
  return { accessToken, relayId: relay.id, tokenType: "Bearer" }
}

/** Single use: the token row is deleted when consumed (a second use is an unknown token). */
const loginWithToken = (be: Backend, token: string) =>
  Effect.gen(function*() {
    const hash = hashToken(token)
    let record: EnrollmentToken | undefined
    for (const candidate of be.store.enrollmentTokens.values()) if (candidate.tokenHash === hash) record = candidate
    if (record === undefined) return yield* badRequest("Invalid enrollment token")
    if (record.expiresAt.getTime() < be.options.now()) {
      be.store.enrollmentTokens.delete(record.id)
      return yield* badRequest("Enrollment token has expired")
    }
    const relay = be.store.relays.get(record.relayId)
    if (relay === undefined) return yield* badRequest("Enrollment token is not linked to a relay")
    if (!be.store.enrollmentTokens.delete(record.id)) return yield* badRequest("Enrollment token has already been used")
    return completeLogin(be, relay)
  })

const loginWithAws = (
  be: Backend,
  input: { relayId: string; iamHttpRequestMethod: string; iamRequestBody: string; iamRequestHeaders: string }
) =>
  Effect.gen(function*() {
    const relay = be.store.relays.get(input.relayId)
    if (relay === undefined || relay.authMethod === undefined) return yield* unauthorized("Invalid relay credentials")
    if (relay.authMethod.method !== "aws") return yield* unauthorized("Relay is not configured for AWS authentication")
    const verdict = yield* Effect.promise(async () => be.options.verifyRelayAwsLogin({ relay, ...input }))
    if (!verdict.ok) return yield* unauthorized(verdict.message)
    return completeLogin(be, relay)
  })

/** `POST /v2/relays/login`: a union on `method`. */
export const loginRelay = (be: Backend, body: unknown) =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const method = r.raw["method"]
    if (method === "token") {
      const token = r.string("token", { min: 1 })
      yield* r.done
      return yield* loginWithToken(be, token)
    }
    if (method === "aws") {
      const relayId = r.uuid("relayId")
      const iamHttpRequestMethod = r.optionalString("iamHttpRequestMethod", "POST")
      const iamRequestBody = r.string("iamRequestBody")
      const iamRequestHeaders = r.string("iamRequestHeaders")
      yield* r.done
      return yield* loginWithAws(be, { relayId, iamHttpRequestMethod, iamRequestBody, iamRequestHeaders })
    }
    yield* r.done // a body that is not an object
    return yield* validationFailure([{
      code: "invalid_union_discriminator",
      options: ["aws", "token"],
      path: ["method"],
      message: "Invalid discriminator value. Expected 'aws' | 'token'"
    }])
  })

/** `POST /v2/relays/connect`: certificates for the host stored with the relay. */
export const connectRelayV2 = (be: Backend, relay: Relay) =>
  Effect.map(relayServerCredentials(be, relayScope(relay), relay.host), (credentials) => ({
    relayId: relay.id,
    ...credentials
  }))
