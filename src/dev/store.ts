/**
 * The control plane's in-memory database: the rows upstream keeps in Postgres (orgs, machine
 * identities, identity access tokens, relays, relay enrollment tokens, gateways) plus a log of
 * every HTTP request received, so tests can assert exactly what a relay sent.
 *
 * Plain mutable maps: JavaScript runs one handler step at a time, and no operation here awaits
 * in the middle of a read-modify-write.
 */
import { randomUUID } from "node:crypto"

export interface Org {
  readonly id: string
  readonly name: string
}

export interface Identity {
  readonly id: string
  readonly orgId: string
  readonly name: string
  /** Universal auth. */
  readonly clientId: string
  readonly clientSecret: string
  /** Seconds; 0 = no expiry. */
  readonly accessTokenTTL: number
  /** Seconds; 0 = no max. */
  readonly accessTokenMaxTTL: number
  /** What the default verifier of the JWT-based logins (kubernetes, azure, gcp, oidc, jwt) accepts. */
  readonly jwt: string | undefined
  readonly createdAt: Date
}

/** upstream `identity_access_tokens` row. */
export interface AccessTokenRecord {
  readonly id: string
  readonly identityId: string
  readonly authMethod: string
  readonly accessTokenTTL: number
  readonly accessTokenMaxTTL: number
  readonly createdAtMs: number
  lastRenewedAtMs: number | undefined
  revoked: boolean
}

export type RelayAuthMethod =
  | { readonly method: "token" }
  | {
    readonly method: "aws"
    readonly stsEndpoint: string
    readonly allowedPrincipalArns: string
    readonly allowedAccountIds: string
  }

/** upstream `relays` row. v1 instance relays: orgId null; v1 org relays: identityId set; v2: authMethod set. */
export interface Relay {
  readonly id: string
  readonly orgId: string | null
  readonly identityId: string | null
  name: string
  host: string
  readonly createdAt: Date
  updatedAt: Date
  heartbeat: Date | null
  healthAlertedAt: Date | null
  /** v2 relays only. */
  readonly authMethod: RelayAuthMethod | undefined
  /** Bumped by every v2 login: older relay access tokens stop working. */
  tokenVersion: number
}

export interface EnrollmentToken {
  readonly id: string
  readonly relayId: string
  readonly orgId: string
  /** SHA-256 hex of the token: the token itself is never stored. */
  readonly tokenHash: string
  readonly expiresAt: Date
}

/** upstream `gateways_v2` row (identity-registered gateways). */
export interface Gateway {
  readonly id: string
  readonly orgId: string
  readonly identityId: string
  name: string
  relayId: string
  readonly createdAt: Date
  updatedAt: Date
  heartbeat: Date | null
}

export interface LoggedRequest {
  readonly reqId: string
  readonly at: Date
  readonly method: string
  /** Path without the query string, e.g. `/api/v1/relays/register-instance-relay`. */
  readonly path: string
  readonly url: string
  /** Lower-cased header names, as received (authorization and user-agent included). */
  readonly headers: Readonly<Record<string, string>>
  /** The body as text ("" when there was none). */
  readonly rawBody: string
  /** The body parsed as JSON; undefined when empty or not JSON. */
  readonly body: unknown
}

export class Store {
  readonly orgs = new Map<string, Org>()
  readonly identities = new Map<string, Identity>()
  readonly accessTokens = new Map<string, AccessTokenRecord>()
  readonly relays = new Map<string, Relay>()
  readonly enrollmentTokens = new Map<string, EnrollmentToken>()
  readonly gateways = new Map<string, Gateway>()
  readonly requests: Array<LoggedRequest> = []

  static readonly newId = (): string => randomUUID()

  findRelay(predicate: (relay: Relay) => boolean): Relay | undefined {
    for (const relay of this.relays.values()) if (predicate(relay)) return relay
    return undefined
  }

  findGateway(predicate: (gateway: Gateway) => boolean): Gateway | undefined {
    for (const gateway of this.gateways.values()) if (predicate(gateway)) return gateway
    return undefined
  }

  identityByClientId(clientId: string): Identity | undefined {
    for (const identity of this.identities.values()) if (identity.clientId === clientId) return identity
    return undefined
  }
}

// ---------------------------------------------------------------------------------------------
// Wire views (what the API returns; dates as ISO strings, as fastify serialises them)

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString())

/** `RelaysSchema` row (GET /v1/relays, DELETE /v1/relays/:id). */
export const relayRow = (relay: Relay) => ({
  id: relay.id,
  createdAt: iso(relay.createdAt),
  updatedAt: iso(relay.updatedAt),
  orgId: relay.orgId,
  identityId: relay.identityId,
  name: relay.name,
  host: relay.host,
  heartbeat: iso(relay.heartbeat),
  healthAlertedAt: iso(relay.healthAlertedAt)
})
export type RelayRow = ReturnType<typeof relayRow>

/** GET /v2/gateways item. */
export const gatewayRow = (gateway: Gateway, identity: Identity | undefined) => ({
  id: gateway.id,
  identityId: gateway.identityId,
  name: gateway.name,
  createdAt: iso(gateway.createdAt),
  updatedAt: iso(gateway.updatedAt),
  heartbeat: iso(gateway.heartbeat),
  identity: identity ? { name: identity.name, id: identity.id } : null
})
export type GatewayRow = ReturnType<typeof gatewayRow>
