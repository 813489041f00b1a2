/**
 * Relays (upstream `relay-service.ts`): registration of instance and org relays, the certificates
 * a relay receives, the backend's relay-client credentials, and the heartbeat probe that dials the
 * relay's TLS port. v2 (enrolled) relays are in relayEnrollment.ts.
 */
import { Effect } from "effect"
import type { RelayClientCredentials, RelayScope, RelayServerPkiResponse } from "../pki/mint.ts"
import type { Actor } from "./auth.ts"
import { type Backend, mint } from "./backend.ts"
import { type ApiError, badRequest, notFound } from "./errors.ts"
import { connectRelay, type RelayDial } from "./probes.ts"
import { type Relay, relayRow, Store } from "./store.ts"
import { issueRelayHostCertificate } from "./sshIssue.ts"
import { BodyReader } from "./validate.ts"

type IdentityActor = Extract<Actor, { readonly _tag: "Identity" }>

/** The `ssh` object of a registration response. */
export interface RelaySshResponse {
  readonly serverCertificate: string
  readonly serverPrivateKey: string
  readonly clientCAPublicKey: string
}

export interface RelayCredentials {
  readonly pki: RelayServerPkiResponse
  readonly ssh: RelaySshResponse
}

export const relayScope = (relay: Relay): RelayScope =>
  relay.orgId === null ? { kind: "instance" } : { kind: "org", orgId: relay.orgId }

/** upstream `$generateRelayServerCredentials`: new TLS key and new SSH key on every call, existing CAs. */
export const relayServerCredentials = (be: Backend, scope: RelayScope, host: string): Effect.Effect<RelayCredentials> =>
  mint(async () => {
    const [pki, ssh] = await Promise.all([be.authorities.relayPki(scope), be.authorities.sshCas(scope)])
    const [tlsCredentials, hostCertificate] = await Promise.all([
      pki.issueRelayServer(host),
      issueRelayHostCertificate(ssh.server.key, host, be.authorities.keyBits, be.authorities.sshComment)
    ])
    return {
      pki: tlsCredentials,
      ssh: {
        serverCertificate: hostCertificate.certificate,
        serverPrivateKey: hostCertificate.privateKey,
        clientCAPublicKey: ssh.client.publicKey
      }
    }
  })

const readRegistration = (body: unknown) =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const host = r.string("host")
    const name = r.slug("name", { min: 1, max: 32, field: "name" })
    yield* r.done
    // Development mode skips upstream's host checks; an empty host cannot be certified at all.
    if (host.length === 0) return yield* badRequest("Invalid host")
    return { host, name }
  })

export const newRelay = (be: Backend, fields: Pick<Relay, "orgId" | "identityId" | "name" | "host" | "authMethod">): Relay => {
  const now = new Date(be.options.now())
  const relay: Relay = {
    id: Store.newId(),
    ...fields,
    createdAt: now,
    updatedAt: now,
    heartbeat: null,
    healthAlertedAt: null,
    tokenVersion: 0
  }
  be.store.relays.set(relay.id, relay)
  return relay
}

/** Relay names are unique per scope (upstream's heartbeat and gateway lookups are by name). */
export const assertNameFree = (be: Backend, orgId: string | null, name: string, except?: Relay) => {
  const taken = be.store.findRelay((r) => r.orgId === orgId && r.name === name && r !== except)
  return taken ? Effect.fail(badRequest(`Relay with name "${name}" already exists`)) : Effect.void
}

/** `POST /v1/relays/register-instance-relay` (secret already checked): upsert by name, then certify. */
export const registerInstanceRelay = (be: Backend, body: unknown) =>
  Effect.gen(function*() {
    const { host, name } = yield* readRegistration(body)
    const existing = be.store.findRelay((r) => r.orgId === null && r.name === name)
    if (existing === undefined) {
      newRelay(be, { orgId: null, identityId: null, name, host, authMethod: undefined })
    } else if (existing.host !== host) {
      existing.host = host
      existing.updatedAt = new Date(be.options.now())
    }
    return yield* relayServerCredentials(be, { kind: "instance" }, host)
  })

/** `POST /v1/relays/register-org-relay`: one relay per machine identity. */
export const registerOrgRelay = (be: Backend, actor: IdentityActor, body: unknown) =>
  Effect.gen(function*() {
    const { host, name } = yield* readRegistration(body)
    const orgId = actor.org.id
    const existing = be.store.findRelay((r) => r.identityId === actor.identity.id && r.orgId === orgId)
    if (existing && (existing.host !== host || existing.name !== name)) {
      return yield* badRequest(
        `Machine identity already has an existing relay with the name "${existing.name}" and host "${existing.host}". Delete the existing relay or use a different machine identity.`
      )
    }
    if (existing === undefined) {
      yield* assertNameFree(be, orgId, name)
      newRelay(be, { orgId, identityId: actor.identity.id, name, host, authMethod: undefined })
    }
    return yield* relayServerCredentials(be, { kind: "org", orgId }, host)
  })

// ---------------------------------------------------------------------------------------------
// Client credentials and the heartbeat probe

export interface RelayClientRequest {
  readonly gatewayId: string
  readonly gatewayName: string
  /** The caller's org: subject O is `<orgName>-<orgId>`. */
  readonly orgId: string
  readonly orgName: string
  readonly validitySeconds?: number
}

/** upstream `getCredentialsForClient`: signed by the relay's scope (instance or org) client CA. */
export const relayClientCredentials = (
  be: Backend,
  relay: Relay,
  request: RelayClientRequest
): Effect.Effect<RelayClientCredentials> =>
  mint(async () => (await be.authorities.relayPki(relayScope(relay))).issueRelayClient(request))

/** How the backend dials this relay with these credentials. */
export const relayDial = (be: Backend, relay: Relay, credentials: RelayClientCredentials): RelayDial => ({
  relayHost: relay.host,
  address: be.options.relayTlsAddress(relay.host),
  credentials,
  timeoutMs: be.options.socketTimeoutMs,
  sockets: be.sockets
})

/**
 * upstream `heartbeat`: a 60 s relay-client certificate (CN zero UUID, name `heartbeat`), a TLS
 * handshake with the relay, then `heartbeat = now`. The probe socket is left open, as upstream
 * does (the relay closes it; otherwise the idle timeout does).
 */
export const probeRelay = (be: Backend, relay: Relay): Effect.Effect<void, ApiError> =>
  Effect.gen(function*() {
    const credentials = yield* mint(async () => (await be.authorities.relayPki(relayScope(relay))).issueHeartbeatClient())
    yield* Effect.tryPromise({
      try: () => connectRelay(relayDial(be, relay, credentials)),
      catch: (e) => badRequest(`Relay ${relay.name} is not reachable: ${e instanceof Error ? e.message : String(e)}`)
    })
    relay.heartbeat = new Date()
  })

const readHeartbeat = (body: unknown) =>
  Effect.gen(function*() {
    const r = new BodyReader(body)
    const name = r.slug("name", { min: 1, max: 32, field: "name" })
    yield* r.done
    return name
  })

/** `POST /v1/relays/heartbeat-instance-relay` (secret already checked). */
export const heartbeatInstanceRelay = (be: Backend, body: unknown) =>
  Effect.gen(function*() {
    const name = yield* readHeartbeat(body)
    const relay = be.store.findRelay((r) => r.orgId === null && r.name === name)
    if (relay === undefined) return yield* notFound(`Relay with name ${name} not found.`)
    yield* probeRelay(be, relay)
  })

/** `POST /v1/relays/heartbeat-org-relay`: any identity of the org may trigger it. */
export const heartbeatOrgRelay = (be: Backend, actor: IdentityActor, body: unknown) =>
  Effect.gen(function*() {
    const name = yield* readHeartbeat(body)
    const relay = be.store.findRelay((r) => r.orgId === actor.org.id && r.name === name)
    if (relay === undefined) return yield* notFound(`Relay with name ${name} not found.`)
    yield* probeRelay(be, relay)
  })

/** `GET /v1/relays`: instance relays first, then the caller's org's. */
export const listRelays = (be: Backend, orgId: string) => {
  const all = [...be.store.relays.values()]
  return [...all.filter((r) => r.orgId === null), ...all.filter((r) => r.orgId === orgId)].map(relayRow)
}

/** `DELETE /v1/relays/:id`: org relays of the caller's org only. */
export const deleteRelay = (be: Backend, orgId: string, id: string) => {
  const relay = be.store.relays.get(id)
  if (relay === undefined || relay.orgId === null || relay.orgId !== orgId) {
    return Effect.fail(notFound("Relay not found"))
  }
  be.store.relays.delete(id)
  return Effect.succeed(relayRow(relay))
}
