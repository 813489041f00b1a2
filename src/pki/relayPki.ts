/**
 * The relay PKI as Infisical's backend mints it (upstream `relay-service.ts`):
 *
 *   Root (O=Infisical, CN=Infisical Instance Root Relay CA; no basicConstraints)
 *   ├── Organization Relay CA (pathlen 2)
 *   │     └── per org: Org Relay Client CA / Org Relay Server CA (O=<orgId>, pathlen 0)
 *   └── Instance Relay CA (pathlen 1)
 *         └── Instance Relay Client CA / Instance Relay Server CA (pathlen 0)
 *
 * Server CAs sign the relays' TLS certificates (registration), client CAs sign the certificates
 * the backend presents to a relay (one per connection attempt, heartbeats included).
 */
import {
  HEARTBEAT_CLIENT_VALIDITY_SECONDS,
  HEARTBEAT_GATEWAY_NAME,
  INFISICAL_O,
  INSTANCE_RELAY_CA_CN,
  INSTANCE_RELAY_CLIENT_CA_CN,
  INSTANCE_RELAY_SERVER_CA_CN,
  ORG_RELAY_CLIENT_CA_CN,
  ORG_RELAY_SERVER_CA_CN,
  ORGANIZATION_RELAY_CA_CN,
  RELAY_CLIENT_VALIDITY_SECONDS,
  RELAY_CONNECTING_GATEWAY_INFO_OID,
  RELAY_SERVER_VALIDITY_SECONDS,
  ROOT_RELAY_CA_CN,
  ZERO_UUID
} from "./profile.ts"
import {
  anyPolicy,
  authorityKeyIdentifier,
  clientAuth,
  createIntermediateCa,
  createRootCa,
  hostSubjectAltName,
  issueCertificate,
  jsonExtension,
  keyUsage,
  keyUsageExtension,
  leafBasicConstraints,
  newKeyPair,
  pemChain,
  privateKeyToPem,
  serverAuth,
  subjectKeyIdentifier,
  validityFromNow,
  type CertifiedKey,
  type KeyOptions,
  type x509
} from "./x509.ts"

export type RelayScope = { readonly kind: "instance" } | { readonly kind: "org"; readonly orgId: string }

/** The `pki` object of a relay registration response (control-plane.md "Relay API"). */
export interface RelayServerPkiResponse {
  /** Relay TLS certificate, PEM, no trailing newline. */
  readonly serverCertificate: string
  /** Its key: PKCS#8 PEM with a trailing newline. */
  readonly serverPrivateKey: string
  /** `[Relay Client CA, Instance|Organization Relay CA, Root]` joined by `\n`, no trailing newline. */
  readonly clientCertificateChain: string
}

/** What a client (the backend, the CLI) gets to dial a relay (upstream `getCredentialsForClient`). */
export interface RelayClientCredentials {
  readonly clientCertificate: string
  readonly clientPrivateKey: string
  /** `[Relay Server CA, Instance|Organization Relay CA, Root]`: the client's trust anchors. */
  readonly serverCertificateChain: string
}

export interface RelayClientRequest {
  /** CN: the gateway the relay must route to. */
  readonly gatewayId: string
  /** Carried in extension 1.3.6.1.4.1.12345.100.3 as `{"name":"<gatewayName>"}`. */
  readonly gatewayName: string
  /** Subject O is `<orgName>-<orgId>` (the caller's org, not the relay's). */
  readonly orgName: string
  readonly orgId: string
  /** Default 300 (5 min). PAM sessions pass their session length. */
  readonly validitySeconds?: number
}

export interface RelayPki {
  readonly scope: RelayScope
  readonly root: CertifiedKey
  /** Instance Relay CA (instance scope) or Organization Relay CA (org scope). */
  readonly relayCa: CertifiedKey
  readonly clientCa: CertifiedKey
  readonly serverCa: CertifiedKey
  /** `[client CA, relay CA, root]` PEM chain: what the relay trusts for client certificates. */
  readonly clientCertificateChain: string
  /** `[server CA, relay CA, root]` PEM chain: what clients trust for the relay's certificate. */
  readonly serverCertificateChain: string
  /** A relay TLS server certificate for `host` (bare IP or DNS name), with a new key. */
  readonly issueRelayServer: (host: string) => Promise<RelayServerPkiResponse>
  /** A backend → relay client certificate targeting one gateway. */
  readonly issueRelayClient: (request: RelayClientRequest) => Promise<RelayClientCredentials>
  /** The certificate the backend's relay heartbeat presents (CN zero UUID, 60 s). */
  readonly issueHeartbeatClient: () => Promise<RelayClientCredentials>
}

export interface RelayPkiCas {
  readonly scope: RelayScope
  readonly root: CertifiedKey
  readonly relayCa: CertifiedKey
  readonly clientCa: CertifiedKey
  readonly serverCa: CertifiedKey
}

/** Builds the issuing side over existing CAs (e.g. restored with `importCa`). */
export const relayPkiFromCas = (cas: RelayPkiCas, options?: KeyOptions): RelayPki => {
  const { scope, root, relayCa, clientCa, serverCa } = cas
  const clientCertificateChain = pemChain([clientCa.certificate, relayCa.certificate, root.certificate])
  const serverCertificateChain = pemChain([serverCa.certificate, relayCa.certificate, root.certificate])
  // The AKI of every leaf of a CA is the same extension: compute it once.
  let serverAki: Promise<x509.Extension> | undefined
  let clientAki: Promise<x509.Extension> | undefined

  const issueRelayServer = async (host: string): Promise<RelayServerPkiResponse> => {
    if (host.length === 0) throw new TypeError("relay host must not be empty")
    serverAki ??= authorityKeyIdentifier(serverCa.certificate)
    const keys = await newKeyPair(options)
    const leaf = await issueCertificate({
      subject: [
        ["CN", host],
        ["O", scope.kind === "org" ? scope.orgId : INFISICAL_O],
        ["OU", "Relay"]
      ],
      issuer: serverCa,
      keys,
      ...validityFromNow(RELAY_SERVER_VALIDITY_SECONDS),
      extensions: [
        leafBasicConstraints(),
        await serverAki,
        await subjectKeyIdentifier(keys.publicKey),
        anyPolicy(),
        keyUsageExtension(keyUsage.serverLeaf),
        serverAuth(),
        hostSubjectAltName(host)
      ]
    })
    return {
      serverCertificate: leaf.certificatePem,
      serverPrivateKey: privateKeyToPem(leaf.privateKey),
      clientCertificateChain
    }
  }

  const issueRelayClient = async (request: RelayClientRequest): Promise<RelayClientCredentials> => {
    clientAki ??= authorityKeyIdentifier(clientCa.certificate)
    const keys = await newKeyPair(options)
    const leaf = await issueCertificate({
      subject: [
        ["O", `${request.orgName}-${request.orgId}`],
        ["OU", "relay-client"],
        ["CN", request.gatewayId]
      ],
      issuer: clientCa,
      keys,
      ...validityFromNow(request.validitySeconds ?? RELAY_CLIENT_VALIDITY_SECONDS),
      extensions: [
        leafBasicConstraints(),
        await clientAki,
        await subjectKeyIdentifier(keys.publicKey),
        anyPolicy(),
        keyUsageExtension(keyUsage.clientLeaf),
        clientAuth(),
        jsonExtension(RELAY_CONNECTING_GATEWAY_INFO_OID, { name: request.gatewayName })
      ]
    })
    return {
      clientCertificate: leaf.certificatePem,
      clientPrivateKey: privateKeyToPem(leaf.privateKey),
      serverCertificateChain
    }
  }

  // Upstream `heartbeat`: instance relays get org "heartbeat"/zero UUID, org relays <orgId>/<orgId>.
  const issueHeartbeatClient = (): Promise<RelayClientCredentials> =>
    issueRelayClient({
      gatewayId: ZERO_UUID,
      gatewayName: HEARTBEAT_GATEWAY_NAME,
      orgName: scope.kind === "org" ? scope.orgId : HEARTBEAT_GATEWAY_NAME,
      orgId: scope.kind === "org" ? scope.orgId : ZERO_UUID,
      validitySeconds: HEARTBEAT_CLIENT_VALIDITY_SECONDS
    })

  return {
    scope,
    root,
    relayCa,
    clientCa,
    serverCa,
    clientCertificateChain,
    serverCertificateChain,
    issueRelayServer,
    issueRelayClient,
    issueHeartbeatClient
  }
}

/**
 * The instance-wide part of the hierarchy (root, Organization Relay CA, Instance Relay CA), plus
 * the scoped client/server CAs created lazily on first use and then reused, like the backend's
 * `$getInstanceCAs` / `$getOrgCAs`.
 */
export interface RelayHierarchy {
  readonly root: CertifiedKey
  readonly organizationRelayCa: CertifiedKey
  readonly instanceRelayCa: CertifiedKey
  readonly instance: () => Promise<RelayPki>
  readonly org: (orgId: string) => Promise<RelayPki>
  readonly pki: (scope: RelayScope) => Promise<RelayPki>
}

export interface RelayHierarchyCas {
  readonly root: CertifiedKey
  readonly organizationRelayCa: CertifiedKey
  readonly instanceRelayCa: CertifiedKey
}

/** A hierarchy over existing top-level CAs (see `importCa`). */
export const relayHierarchyFromCas = (cas: RelayHierarchyCas, options?: KeyOptions): RelayHierarchy => {
  const { root, organizationRelayCa, instanceRelayCa } = cas
  let instancePki: Promise<RelayPki> | undefined
  const orgPkis = new Map<string, Promise<RelayPki>>()

  const memo = (create: () => Promise<RelayPki>, forget: () => void): Promise<RelayPki> => {
    const p = create()
    p.catch(forget)
    return p
  }

  const instance = (): Promise<RelayPki> =>
    (instancePki ??= memo(
      async () => {
        const [clientCa, serverCa] = await Promise.all([
          createIntermediateCa([["O", INFISICAL_O], ["CN", INSTANCE_RELAY_CLIENT_CA_CN]], instanceRelayCa, 0, options),
          createIntermediateCa([["O", INFISICAL_O], ["CN", INSTANCE_RELAY_SERVER_CA_CN]], instanceRelayCa, 0, options)
        ])
        const scope: RelayScope = { kind: "instance" }
        return relayPkiFromCas({ scope, root, relayCa: instanceRelayCa, clientCa, serverCa }, options)
      },
      () => {
        instancePki = undefined
      }
    ))

  const org = (orgId: string): Promise<RelayPki> => {
    const existing = orgPkis.get(orgId)
    if (existing) return existing
    const created = memo(
      async () => {
        const [clientCa, serverCa] = await Promise.all([
          createIntermediateCa([["O", orgId], ["CN", ORG_RELAY_CLIENT_CA_CN]], organizationRelayCa, 0, options),
          createIntermediateCa([["O", orgId], ["CN", ORG_RELAY_SERVER_CA_CN]], organizationRelayCa, 0, options)
        ])
        const scope: RelayScope = { kind: "org", orgId }
        return relayPkiFromCas({ scope, root, relayCa: organizationRelayCa, clientCa, serverCa }, options)
      },
      () => {
        orgPkis.delete(orgId)
      }
    )
    orgPkis.set(orgId, created)
    return created
  }

  return {
    root,
    organizationRelayCa,
    instanceRelayCa,
    instance,
    org,
    pki: (scope) => (scope.kind === "instance" ? instance() : org(scope.orgId))
  }
}

/** Mints a fresh root, Organization Relay CA (pathlen 2) and Instance Relay CA (pathlen 1). */
export const createRelayHierarchy = async (options?: KeyOptions): Promise<RelayHierarchy> => {
  const root = await createRootCa([["O", INFISICAL_O], ["CN", ROOT_RELAY_CA_CN]], options)
  const [organizationRelayCa, instanceRelayCa] = await Promise.all([
    createIntermediateCa([["O", INFISICAL_O], ["CN", ORGANIZATION_RELAY_CA_CN]], root, 2, options),
    createIntermediateCa([["O", INFISICAL_O], ["CN", INSTANCE_RELAY_CA_CN]], root, 1, options)
  ])
  return relayHierarchyFromCas({ root, organizationRelayCa, instanceRelayCa }, options)
}

export interface MakeRelayPkiOptions extends KeyOptions {
  /** Reuse an existing hierarchy (so instance and org PKIs share the root). Default: a new one. */
  readonly hierarchy?: RelayHierarchy
}

/** One relay PKI (instance or org scope); creates a whole new hierarchy unless one is passed. */
export const makeRelayPki = async (scope: RelayScope, options?: MakeRelayPkiOptions): Promise<RelayPki> => {
  const hierarchy = options?.hierarchy ?? (await createRelayHierarchy(options))
  return hierarchy.pki(scope)
}
