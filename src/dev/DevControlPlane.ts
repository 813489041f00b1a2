/**
 * DevControlPlane: the in-process Infisical backend (state, CAs, services) and its programmatic
 * API, used by `infisical relay dev` and by tests to set up identities, relays and tokens, mint
 * the credentials the backend would use, trigger probes and read what clients sent.
 * The HTTP side lives in ControlPlaneServer.ts.
 */
import type tls from "node:tls"
import { Context, Effect, Layer, type Scope } from "effect"
import type {
  GatewayClientCredentials,
  GatewayPki,
  PlatformClientOptions,
  RelayClientCredentials,
  RelayScope
} from "../pki/mint.ts"
import type { Authorities, SshCas } from "./authorities.ts"
import { type Backend, makeBackend, mint } from "./backend.ts"
import { type ApiError, notFound } from "./errors.ts"
import {
  dialGateway,
  type GatewayRegistration,
  pingGatewayById,
  platformClientCredentials,
  registerGateway
} from "./gateways.ts"
import {
  type AccessTokenGrant,
  createIdentity,
  type CreateIdentityInput,
  type IdentityCredentials,
  issueAccessToken
} from "./identities.ts"
import type { ControlPlaneOptions } from "./options.ts"
import { createRelay, type CreateRelayInput, generateEnrollmentToken, type RelayV2View } from "./relayEnrollment.ts"
import { probeRelay, relayClientCredentials } from "./relays.ts"
import { gatewayRow, type GatewayRow, type LoggedRequest, type Org, type Relay, relayRow, type RelayRow, Store } from "./store.ts"

export interface IssueRelayClientInput {
  /** The relay, by id or name (org relays of `orgId` first, then instance relays). */
  readonly relay: string
  readonly gatewayId: string
  readonly gatewayName: string
  /** The caller's org (subject O `<orgName>-<orgId>`); default: the default org. */
  readonly orgId?: string
  readonly orgName?: string
  /** Default 300. */
  readonly validitySeconds?: number
}

export interface IssuedRelayClient extends RelayClientCredentials {
  readonly relayHost: string
  /** Where the backend would dial (relayTlsAddress applied); `servername` is `relayHost`. */
  readonly address: { readonly host: string; readonly port: number }
}

export interface DevControlPlaneShape {
  /** Internals for the HTTP routes (and for tests that need to reach in). */
  readonly backend: Backend
  readonly defaultOrg: Org
  readonly authorities: Authorities

  readonly createOrg: (input?: { readonly id?: string; readonly name?: string }) => Effect.Effect<Org>
  readonly createIdentity: (input?: CreateIdentityInput) => Effect.Effect<IdentityCredentials, ApiError>
  /** An access token for the identity, as a universal-auth login would return it. */
  readonly issueAccessToken: (identityId: string) => Effect.Effect<AccessTokenGrant, ApiError>

  /** A v2 relay (as `POST /v2/relays` creates it); default org unless `orgId`. */
  readonly createRelay: (input: CreateRelayInput & { readonly orgId?: string }) => Effect.Effect<RelayV2View, ApiError>
  readonly generateEnrollmentToken: (relayId: string) => Effect.Effect<{ token: string; expiresAt: Date }, ApiError>

  /** What `POST /v2/gateways {relayName, name}` returns to this identity (same upsert). */
  readonly registerGateway: (input: {
    readonly identityId: string
    readonly relayName: string
    readonly name: string
  }) => Effect.Effect<GatewayRegistration, ApiError>

  /** Relay-client credentials for a gateway (what the backend presents to the relay's TLS port). */
  readonly issueRelayClient: (input: IssueRelayClientInput) => Effect.Effect<IssuedRelayClient, ApiError>
  /** The backend's platform client certificate for a gateway's inner TLS. */
  readonly gatewayClientCredentials: (
    gatewayId: string,
    options?: PlatformClientOptions
  ) => Effect.Effect<GatewayClientCredentials, ApiError>
  /** A backend-style connection through the relay to a gateway, closed with the scope; `target` goes in the routing extension. */
  readonly dialGateway: (
    gatewayId: string,
    alpn: string,
    target?: PlatformClientOptions
  ) => Effect.Effect<tls.TLSSocket, ApiError, Scope.Scope>

  /** The relay heartbeat probe (as the heartbeat routes run it). */
  readonly probeRelay: (relayId: string) => Effect.Effect<void, ApiError>
  /** The gateway heartbeat (relay → gateway, `infisical-ping`, `PONG`). */
  readonly pingGateway: (gatewayId: string) => Effect.Effect<void, ApiError>

  /** An org's gateway PKI (default org): issueGatewayServer, issuePlatformClient, chains. */
  readonly gatewayPki: (orgId?: string) => Effect.Effect<GatewayPki>
  /** The relay CA material of a scope, and its SSH CAs. */
  readonly relayPki: (scope: RelayScope) => Effect.Effect<Awaited<ReturnType<Authorities["relayPki"]>>>
  readonly sshCas: (scope: RelayScope) => Effect.Effect<SshCas>

  readonly relays: Effect.Effect<ReadonlyArray<RelayRow & { readonly authMethod: Relay["authMethod"] }>>
  readonly gateways: Effect.Effect<ReadonlyArray<GatewayRow & { readonly orgId: string; readonly relayId: string }>>
  /** Every request received, oldest first. */
  readonly requests: Effect.Effect<ReadonlyArray<LoggedRequest>>
  readonly clearRequests: Effect.Effect<void>
}

export class DevControlPlane extends Context.Tag("dev/DevControlPlane")<DevControlPlane, DevControlPlaneShape>() {
  /** The control plane's state; its backend sockets close with the layer. */
  static readonly layer = (options: ControlPlaneOptions = {}): Layer.Layer<DevControlPlane> =>
    Layer.scoped(DevControlPlane, Effect.map(makeBackend(options), makeDevControlPlane))
}

const findRelay = (be: Backend, ref: string, orgId: string): Effect.Effect<Relay, ApiError> => {
  const relay = be.store.relays.get(ref) ??
    be.store.findRelay((r) => r.orgId === orgId && r.name === ref) ??
    be.store.findRelay((r) => r.orgId === null && r.name === ref)
  return relay ? Effect.succeed(relay) : Effect.fail(notFound(`Relay ${ref} not found`))
}

export const makeDevControlPlane = (be: Backend): DevControlPlaneShape => ({
  backend: be,
  defaultOrg: be.defaultOrg,
  authorities: be.authorities,

  createOrg: (input = {}) =>
    Effect.sync(() => {
      const org: Org = { id: input.id ?? Store.newId(), name: input.name ?? "Dev Organization" }
      be.store.orgs.set(org.id, org)
      return org
    }),
  createIdentity: (input) => createIdentity(be, input),
  issueAccessToken: (identityId) =>
    Effect.suspend(() => {
      const identity = be.store.identities.get(identityId)
      return identity
        ? Effect.succeed(issueAccessToken(be, identity))
        : Effect.fail(notFound(`Identity with ID ${identityId} not found`))
    }),

  createRelay: ({ orgId, ...input }) => createRelay(be, orgId ?? be.defaultOrg.id, input),
  generateEnrollmentToken: (relayId) =>
    Effect.flatMap(
      Effect.sync(() => be.store.relays.get(relayId)),
      (relay) =>
        relay?.orgId
          ? generateEnrollmentToken(be, relay.orgId, relayId)
          : Effect.fail(notFound(`Relay ${relayId} not found`))
    ),

  registerGateway: ({ identityId, name, relayName }) =>
    Effect.gen(function*() {
      const identity = be.store.identities.get(identityId)
      const org = identity && be.store.orgs.get(identity.orgId)
      if (identity === undefined || org === undefined) return yield* notFound(`Identity with ID ${identityId} not found`)
      return yield* registerGateway(be, { _tag: "Identity", identity, org }, { relayName, name })
    }),

  issueRelayClient: (input) =>
    Effect.gen(function*() {
      const orgId = input.orgId ?? be.defaultOrg.id
      const relay = yield* findRelay(be, input.relay, orgId)
      const credentials = yield* relayClientCredentials(be, relay, {
        gatewayId: input.gatewayId,
        gatewayName: input.gatewayName,
        orgId,
        orgName: input.orgName ?? be.store.orgs.get(orgId)?.name ?? orgId,
        ...(input.validitySeconds === undefined ? {} : { validitySeconds: input.validitySeconds })
      })
      return { ...credentials, relayHost: relay.host, address: be.options.relayTlsAddress(relay.host) }
    }),
  gatewayClientCredentials: (gatewayId, options) => platformClientCredentials(be, gatewayId, options),
  dialGateway: (gatewayId, alpn, target) => dialGateway(be, gatewayId, alpn, target),

  probeRelay: (relayId) =>
    Effect.flatMap(
      Effect.sync(() => be.store.relays.get(relayId)),
      (relay) => (relay ? probeRelay(be, relay) : Effect.fail(notFound(`Relay ${relayId} not found`)))
    ),
  pingGateway: (gatewayId) => pingGatewayById(be, gatewayId),

  gatewayPki: (orgId) => mint(() => be.authorities.gatewayPki(orgId ?? be.defaultOrg.id)),
  relayPki: (scope) => mint(() => be.authorities.relayPki(scope)),
  sshCas: (scope) => mint(() => be.authorities.sshCas(scope)),

  relays: Effect.sync(() => [...be.store.relays.values()].map((r) => ({ ...relayRow(r), authMethod: r.authMethod }))),
  gateways: Effect.sync(() =>
    [...be.store.gateways.values()].map((g) => ({
      ...gatewayRow(g, be.store.identities.get(g.identityId)),
      orgId: g.orgId,
      relayId: g.relayId
    }))
  ),
  requests: Effect.sync(() => [...be.store.requests]),
  clearRequests: Effect.sync(() => {
    be.store.requests.length = 0
  })
})
