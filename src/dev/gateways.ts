/**
 * Gateways registered by a machine identity (upstream `gateway-v2-service.ts`): registration
 * returns the gateway's inner-TLS server certificate and its SSH user certificate for the relay;
 * the gateway heartbeat makes the backend dial relay → gateway and wait for `PONG`.
 */
import type tls from "node:tls"
import { Effect, type Scope } from "effect"
import type { GatewayClientCredentials, GatewayServerPkiResponse, PlatformClientOptions } from "../pki/mint.ts"
import type { Actor } from "./auth.ts"
import { type Backend, mint } from "./backend.ts"
import { type ApiError, badRequest, notFound } from "./errors.ts"
import { connectGateway, connectRelay, pingGateway } from "./probes.ts"
import { relayClientCredentials, relayDial, relayScope } from "./relays.ts"
import { type Gateway, gatewayRow, type Relay, Store } from "./store.ts"
import { issueGatewayUserCertificate } from "./sshIssue.ts"
import { BodyReader } from "./validate.ts"

type IdentityActor = Extract<Actor, { readonly _tag: "Identity" }>

/** The 200 body of `POST /v2/gateways`. */
export interface GatewayRegistration {
  readonly gatewayId: string
  /** The relay's stored host: the gateway dials `<relayHost>:2222`. */
  readonly relayHost: string
  readonly pki: GatewayServerPkiResponse
  readonly ssh: {
    readonly clientCertificate: string
    readonly clientPrivateKey: string
    readonly serverCAPublicKey: string
  }
}

/** `POST /v2/gateways {relayName, name}`: upsert on the identity, then certify. */
export const registerGateway = (
  be: Backend,
  actor: IdentityActor,
  body: unknown
): Effect.Effect<GatewayRegistration, ApiError> =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const relayName = r.string("relayName")
    const name = r.string("name")
    yield* r.done
    const orgId = actor.org.id
    const gatewayPki = yield* mint(() => be.authorities.gatewayPki(orgId))

    // The org's relay of that name first, then an instance relay.
    const relay = be.store.findRelay((x) => x.orgId === orgId && x.name === relayName) ??
      be.store.findRelay((x) => x.orgId === null && x.name === relayName)
    if (relay === undefined) return yield* notFound(`Relay ${relayName} not found`)

    // (orgId, name) is unique; the upsert key is the identity.
    if (be.store.findGateway((g) => g.orgId === orgId && g.name === name && g.identityId !== actor.identity.id)) {
      return yield* badRequest(`Gateway with name "${name}" already exists`)
    }
    const now = new Date(be.options.now())
    let gateway = be.store.findGateway((g) => g.identityId === actor.identity.id)
    if (gateway === undefined) {
      gateway = { id: Store.newId(), orgId, identityId: actor.identity.id, name, relayId: relay.id, createdAt: now, updatedAt: now, heartbeat: null }
      be.store.gateways.set(gateway.id, gateway)
    } else {
      gateway.name = name
      gateway.relayId = relay.id
      gateway.updatedAt = now
    }

    const gatewayId = gateway.id
    const { pki, ssh } = yield* mint(async () => {
      const sshCas = await be.authorities.sshCas(relayScope(relay))
      // Org relays also name the gateway, so the relay can route by name.
      const principals = relay.orgId === null ? [gatewayId] : [gatewayId, name]
      const [pki, cert] = await Promise.all([
        gatewayPki.issueGatewayServer(),
        issueGatewayUserCertificate(sshCas.client.key, relayName, principals, be.authorities.keyBits, be.authorities.sshComment)
      ])
      return {
        pki,
        ssh: { clientCertificate: cert.certificate, clientPrivateKey: cert.privateKey, serverCAPublicKey: sshCas.server.publicKey }
      }
    })
    return { gatewayId, relayHost: relay.host, pki, ssh }
  })

/** `GET /v2/gateways`: the caller's org's gateways. */
export const listGateways = (be: Backend, orgId: string) =>
  [...be.store.gateways.values()]
    .filter((g) => g.orgId === orgId)
    .map((g) => gatewayRow(g, be.store.identities.get(g.identityId)))

const gatewayById = (be: Backend, gatewayId: string): Effect.Effect<Gateway, ApiError> => {
  const gateway = be.store.gateways.get(gatewayId)
  return gateway ? Effect.succeed(gateway) : Effect.fail(notFound(`Gateway ${gatewayId} not found`))
}

const relayOf = (be: Backend, gateway: Gateway): Effect.Effect<Relay, ApiError> => {
  const relay = be.store.relays.get(gateway.relayId)
  return relay ? Effect.succeed(relay) : Effect.fail(badRequest("Gateway is not associated with a relay"))
}

/** The backend → gateway platform client certificate (`O=<orgId>, OU=gateway-client, CN=platform:<id>`). */
export const platformClientCredentials = (
  be: Backend,
  gatewayId: string,
  options?: PlatformClientOptions
): Effect.Effect<GatewayClientCredentials, ApiError> =>
  Effect.flatMap(gatewayById(be, gatewayId), (gateway) =>
    mint(async () => (await be.authorities.gatewayPki(gateway.orgId)).issuePlatformClient(gateway.id, options)))

/**
 * upstream `getPlatformConnectionDetailsByGatewayId`: both certificates the backend presents to
 * reach one gateway, the relay-client one naming the gateway (CN = id, `.100.3` = name).
 */
export const gatewayConnectionDetails = (be: Backend, gatewayId: string, options?: PlatformClientOptions) =>
  Effect.gen(function*() {
    const gateway = yield* gatewayById(be, gatewayId)
    const relay = yield* relayOf(be, gateway)
    const org = be.store.orgs.get(gateway.orgId)
    const [gatewayCredentials, relayCredentials] = yield* Effect.all([
      platformClientCredentials(be, gatewayId, options),
      relayClientCredentials(be, relay, {
        gatewayId: gateway.id,
        gatewayName: gateway.name,
        orgId: gateway.orgId,
        orgName: org?.name ?? gateway.orgId
      })
    ], { concurrency: 2 })
    return { gateway, relay, relayHost: relay.host, gatewayCredentials, relayCredentials }
  })

/** Relay → gateway ping; on `PONG`, `heartbeat = now`. Failures are upstream's 400s. */
export const pingGatewayById = (be: Backend, gatewayId: string) =>
  Effect.gen(function*() {
    const details = yield* gatewayConnectionDetails(be, gatewayId)
    yield* Effect.tryPromise({
      try: () =>
        pingGateway(
          relayDial(be, details.relay, details.relayCredentials),
          details.gatewayCredentials,
          be.options.pingTimeoutMs
        ),
      catch: (e) => badRequest(e instanceof Error ? e.message : String(e))
    })
    details.gateway.heartbeat = new Date()
  })

/** `POST /v2/gateways/heartbeat`: the calling identity's gateway. */
export const heartbeatGateway = (be: Backend, actor: IdentityActor) =>
  Effect.gen(function*() {
    const gateway = be.store.findGateway((g) => g.orgId === actor.org.id && g.identityId === actor.identity.id)
    if (gateway === undefined) return yield* notFound(`Gateway for identity ${actor.identity.id} not found.`)
    yield* pingGatewayById(be, gateway.id)
  })

/**
 * A backend-style connection to a gateway (outer TLS to the relay, inner TLS with `alpn`), for
 * tests and the dev command; the socket is destroyed when the scope closes.
 */
export const dialGateway = (
  be: Backend,
  gatewayId: string,
  alpn: string,
  target?: PlatformClientOptions
): Effect.Effect<tls.TLSSocket, ApiError, Scope.Scope> =>
  Effect.gen(function*() {
    const details = yield* gatewayConnectionDetails(be, gatewayId, target)
    const outer = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => connectRelay(relayDial(be, details.relay, details.relayCredentials)),
        catch: (e) => badRequest(e instanceof Error ? e.message : String(e))
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    return yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => connectGateway(outer, details.gatewayCredentials, alpn, be.options.socketTimeoutMs, be.sockets),
        catch: (e) => badRequest(e instanceof Error ? e.message : String(e))
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
  })
