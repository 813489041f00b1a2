/**
 * The gateway's inner-TLS PKI, per org (upstream `gateway-v2-service.ts`). The relay never sees
 * it in plaintext; we mint it for the embedded control plane, the fake gateway and the tests:
 *
 *   O=<orgId>, CN=Infisical Gateway Root CA (no basicConstraints)
 *   ├── ... Gateway Server CA (pathlen 0) → gateway server certificate `O=<orgId>, CN=Gateway`
 *   └── ... Gateway Client CA (pathlen 0) → backend → gateway client certificate
 *                                             `O=<orgId>, OU=gateway-client, CN=platform:<gatewayId>`
 */
import {
  GATEWAY_ACTOR_OID,
  GATEWAY_CLIENT_CA_CN,
  GATEWAY_CLIENT_VALIDITY_SECONDS,
  GATEWAY_ROOT_CA_CN,
  GATEWAY_ROUTING_INFO_OID,
  GATEWAY_SERVER_CA_CN,
  GATEWAY_SERVER_VALIDITY_SECONDS,
  HEALTH_CHECK_TARGET
} from "./profile.ts"
import {
  anyPolicy,
  authorityKeyIdentifier,
  clientAuth,
  createIntermediateCa,
  createRootCa,
  issueCertificate,
  jsonExtension,
  keyUsage,
  keyUsageExtension,
  leafBasicConstraints,
  newKeyPair,
  pemChain,
  privateKeyToPem,
  serverAuth,
  subjectAltNames,
  subjectKeyIdentifier,
  validityFromNow,
  type CertifiedKey,
  type KeyOptions
} from "./x509.ts"

/** The `pki` object of a gateway registration response. */
export interface GatewayServerPkiResponse {
  readonly serverCertificate: string
  readonly serverPrivateKey: string
  /** `[Gateway Client CA, Gateway Root CA]`: what the gateway trusts for client certificates. */
  readonly clientCertificateChain: string
}

/** The `gateway` part of upstream's platform connection details. */
export interface GatewayClientCredentials {
  readonly clientCertificate: string
  readonly clientPrivateKey: string
  /** `[Gateway Server CA, Gateway Root CA]`: what the client trusts for the gateway. */
  readonly serverCertificateChain: string
}

export interface PlatformClientOptions {
  /** Default `health-check` / 443, as the backend's gateway heartbeat. */
  readonly targetHost?: string
  readonly targetPort?: number
  /** Default 300 (5 min). */
  readonly validitySeconds?: number
}

export interface GatewayPki {
  readonly orgId: string
  readonly root: CertifiedKey
  readonly serverCa: CertifiedKey
  readonly clientCa: CertifiedKey
  readonly serverCertificateChain: string
  readonly clientCertificateChain: string
  /** `O=<orgId>, CN=Gateway`, SAN DNS:localhost, IP:127.0.0.1, IP:::1, serverAuth, 24 h. */
  readonly issueGatewayServer: () => Promise<GatewayServerPkiResponse>
  /** `O=<orgId>, OU=gateway-client, CN=platform:<gatewayId>`, routing + actor extensions, clientAuth. */
  readonly issuePlatformClient: (
    gatewayId: string,
    options?: PlatformClientOptions
  ) => Promise<GatewayClientCredentials>
}

export interface GatewayPkiCas {
  readonly orgId: string
  readonly root: CertifiedKey
  readonly serverCa: CertifiedKey
  readonly clientCa: CertifiedKey
}

export const gatewayPkiFromCas = (cas: GatewayPkiCas, options?: KeyOptions): GatewayPki => {
  const { orgId, root, serverCa, clientCa } = cas
  const serverCertificateChain = pemChain([serverCa.certificate, root.certificate])
  const clientCertificateChain = pemChain([clientCa.certificate, root.certificate])

  const issueGatewayServer = async (): Promise<GatewayServerPkiResponse> => {
    const keys = await newKeyPair(options)
    const leaf = await issueCertificate({
      subject: [
        ["O", orgId],
        ["CN", "Gateway"]
      ],
      issuer: serverCa,
      keys,
      ...validityFromNow(GATEWAY_SERVER_VALIDITY_SECONDS),
      extensions: [
        leafBasicConstraints(),
        await authorityKeyIdentifier(serverCa.certificate),
        await subjectKeyIdentifier(keys.publicKey),
        anyPolicy(),
        keyUsageExtension(keyUsage.serverLeaf),
        serverAuth(),
        subjectAltNames([
          { type: "dns", value: "localhost" },
          { type: "ip", value: "127.0.0.1" },
          { type: "ip", value: "::1" }
        ])
      ]
    })
    return {
      serverCertificate: leaf.certificatePem,
      serverPrivateKey: privateKeyToPem(leaf.privateKey),
      clientCertificateChain
    }
  }

  const issuePlatformClient = async (
    gatewayId: string,
    opts?: PlatformClientOptions
  ): Promise<GatewayClientCredentials> => {
    const keys = await newKeyPair(options)
    const leaf = await issueCertificate({
      subject: [
        ["O", orgId],
        ["OU", "gateway-client"],
        ["CN", `platform:${gatewayId}`]
      ],
      issuer: clientCa,
      keys,
      ...validityFromNow(opts?.validitySeconds ?? GATEWAY_CLIENT_VALIDITY_SECONDS),
      extensions: [
        leafBasicConstraints(),
        await authorityKeyIdentifier(clientCa.certificate),
        await subjectKeyIdentifier(keys.publicKey),
        anyPolicy(),
        keyUsageExtension(keyUsage.clientLeaf),
        clientAuth(),
        jsonExtension(GATEWAY_ROUTING_INFO_OID, {
          targetHost: opts?.targetHost ?? HEALTH_CHECK_TARGET.targetHost,
          targetPort: opts?.targetPort ?? HEALTH_CHECK_TARGET.targetPort
        }),
        jsonExtension(GATEWAY_ACTOR_OID, { type: "platform" })
      ]
    })
    return {
      clientCertificate: leaf.certificatePem,
      clientPrivateKey: privateKeyToPem(leaf.privateKey),
      serverCertificateChain
    }
  }

  return {
    orgId,
    root,
    serverCa,
    clientCa,
    serverCertificateChain,
    clientCertificateChain,
    issueGatewayServer,
    issuePlatformClient
  }
}

/** Mints a new per-org gateway hierarchy (three RSA keys). */
export const makeGatewayPki = async (orgId: string, options?: KeyOptions): Promise<GatewayPki> => {
  const root = await createRootCa([["O", orgId], ["CN", GATEWAY_ROOT_CA_CN]], options)
  const [serverCa, clientCa] = await Promise.all([
    createIntermediateCa([["O", orgId], ["CN", GATEWAY_SERVER_CA_CN]], root, 0, options),
    createIntermediateCa([["O", orgId], ["CN", GATEWAY_CLIENT_CA_CN]], root, 0, options)
  ])
  return gatewayPkiFromCas({ orgId, root, serverCa, clientCa }, options)
}
