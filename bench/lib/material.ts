/**
 * Certificates and the control plane for the benchmarks, all from src/dev's in-process Infisical
 * control plane (Infisical's certificate profile, RSA-2048 everywhere), so every subject runs on
 * identical material:
 * - the control plane itself (HTTP, in this harness process): our relay registers with it and
 *   heartbeats against it; it is idle while anything is measured;
 * - the Go reference relay's files (TLS server cert/key, client chain, SSH host cert/key) from the
 *   same instance-relay CAs our relay gets its own from;
 * - one gateway key with many user certificates (`client-<relay>`, principal = a gateway id)
 *   signed by the instance SSH client CA, the inner-TLS gateway server cert, and per gateway id the
 *   relay-client cert (CN = gateway id) and platform client cert a backend would present.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { randomUUID } from "node:crypto"
import { type Layer, ManagedRuntime } from "effect"
import * as ControlPlaneServer from "../../src/dev/ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane, makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import {
  DEFAULT_USER_EXTENSIONS,
  generateRsaSshKey,
  issueRelayHostCertificate,
  keygenComment,
  relativeValidity,
  sshCertSerial,
  sshKeyFiles
} from "../../src/dev/sshIssue.ts"
import { splitPemChain } from "../../src/pki/mint.ts"
import { CERT_TYPE_USER, signCertificate } from "../../src/ssh/certs.ts"
import { formatAuthorizedKeyLine, publicKeyOf } from "../../src/ssh/keys.ts"

export const RELAY_NAME = "bench-relay"
export const RELAY_HOST = "127.0.0.1"
export const RELAY_SECRET = "bench-relay-secret"
/** The host-cert principal gateways check: `<relayHost>:2222`, whatever port they really dial. */
export const HOST_PRINCIPAL = `${RELAY_HOST}:2222`
const CERT_TTL_SECONDS = 6 * 60 * 60

export interface GatewayFiles {
  readonly key: string
  /** `ca` for the gateway: the SSH server CA public key line. */
  readonly serverCa: string
  readonly tlsCert: string
  readonly tlsKey: string
  readonly tlsClientCa: string
}

export interface ClientContexts {
  /** outer TLS: relay-client cert (CN = gateway id) + relay server chain */
  readonly outer: tls.SecureContext
  /** inner TLS: platform client cert + gateway server chain */
  readonly inner: tls.SecureContext
}

export interface GoRelayFiles {
  readonly hostCert: string
  readonly hostKey: string
  readonly clientCa: string
  readonly tlsCert: string
  readonly tlsKey: string
  readonly tlsClientChain: string
}

export interface Material {
  readonly dir: string
  readonly controlPlaneUrl: string
  /** Where the control plane's relay probe should dial our relay's TLS port. */
  setRelayTlsPort(port: number): void
  readonly gateway: GatewayFiles
  readonly goRelay: GoRelayFiles
  /** Writes a file of `n` fresh gateway ids' certificates; returns the path and the ids. */
  certFile(name: string, n: number): { readonly path: string; readonly ids: ReadonlyArray<string> }
  /** Client TLS contexts for one gateway id (cached). */
  clientFor(gatewayId: string): Promise<ClientContexts>
  close(): Promise<void>
}

export const makeMaterial = async (): Promise<Material> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-bench-"))
  const write = (name: string, text: string) => {
    const p = path.join(dir, name)
    fs.writeFileSync(p, text, { mode: 0o600 })
    return p
  }
  let relayTlsPort = 1
  const authorities = makeAuthorities()
  const runtime = ManagedRuntime.make(
    ControlPlaneServer.layer({
      authorities,
      relayAuthSecret: RELAY_SECRET,
      relayTlsAddress: () => ({ host: RELAY_HOST, port: relayTlsPort }),
      host: "127.0.0.1",
      port: 0
    }) as Layer.Layer<DevControlPlane | ControlPlaneEndpoint>
  )
  const { url } = await runtime.runPromise(ControlPlaneEndpoint)
  const cp = await runtime.runPromise(DevControlPlane)
  const scope = { kind: "instance" } as const
  const [relayPki, sshCas, gatewayPki] = await Promise.all([
    runtime.runPromise(cp.relayPki(scope)),
    runtime.runPromise(cp.sshCas(scope)),
    runtime.runPromise(cp.gatewayPki())
  ])
  const comment = keygenComment()

  // The Go reference relay: what our relay receives from registration, for the same host.
  const [relayServer, hostCert, gatewayKey, gatewayServer] = await Promise.all([
    relayPki.issueRelayServer(RELAY_HOST),
    issueRelayHostCertificate(sshCas.server.key, RELAY_HOST, authorities.keyBits, comment),
    generateRsaSshKey(authorities.keyBits),
    gatewayPki.issueGatewayServer()
  ])
  const goRelay: GoRelayFiles = {
    hostCert: write("relay-host-cert.pub", hostCert.certificate),
    hostKey: write("relay-host-key", hostCert.privateKey),
    clientCa: write("relay-client-ca.pub", sshCas.client.publicKey),
    tlsCert: write("relay-tls.crt", relayServer.serverCertificate),
    tlsKey: write("relay-tls.key", relayServer.serverPrivateKey),
    tlsClientChain: write("relay-client-chain.pem", relayServer.clientCertificateChain)
  }
  const gateway: GatewayFiles = {
    key: write("gateway-key", sshKeyFiles(gatewayKey, comment).privateKey),
    serverCa: write("ssh-server-ca.pub", sshCas.server.publicKey),
    tlsCert: write("gateway-tls.crt", gatewayServer.serverCertificate),
    tlsKey: write("gateway-tls.key", gatewayServer.serverPrivateKey),
    tlsClientCa: write("gateway-tls-client-ca.pem", gatewayServer.clientCertificateChain)
  }

  const gatewayPublic = publicKeyOf(gatewayKey)
  const userCertLine = (gatewayId: string) =>
    formatAuthorizedKeyLine(
      "ssh-rsa-cert-v01@openssh.com",
      signCertificate(
        gatewayPublic,
        {
          certType: CERT_TYPE_USER,
          keyId: `client-${RELAY_NAME}`,
          // Instance relays: the principal list is just the gateway id.
          principals: [gatewayId],
          ...relativeValidity(CERT_TTL_SECONDS),
          serial: sshCertSerial(),
          extensions: DEFAULT_USER_EXTENSIONS.map((name) => [name, new Uint8Array(0)] as const)
        },
        sshCas.client.key,
        "rsa-sha2-512"
      ),
      comment
    )

  const certFile: Material["certFile"] = (name, n) => {
    const ids = Array.from({ length: n }, () => randomUUID())
    return { path: write(`${name}-certs.pub`, ids.map(userCertLine).join("\n") + "\n"), ids }
  }

  const contexts = new Map<string, Promise<ClientContexts>>()
  const clientFor: Material["clientFor"] = (gatewayId) => {
    let p = contexts.get(gatewayId)
    if (p === undefined) {
      p = (async () => {
        const request = { gatewayId, gatewayName: "", orgId: cp.defaultOrg.id, orgName: cp.defaultOrg.name, validitySeconds: CERT_TTL_SECONDS }
        const [relayClient, platform] = await Promise.all([
          relayPki.issueRelayClient(request),
          gatewayPki.issuePlatformClient(gatewayId, { validitySeconds: CERT_TTL_SECONDS })
        ])
        return {
          outer: tls.createSecureContext({
            cert: relayClient.clientCertificate,
            key: relayClient.clientPrivateKey,
            ca: splitPemChain(relayClient.serverCertificateChain),
            minVersion: "TLSv1.2"
          }),
          inner: tls.createSecureContext({
            cert: platform.clientCertificate,
            key: platform.clientPrivateKey,
            ca: splitPemChain(platform.serverCertificateChain),
            minVersion: "TLSv1.2",
            maxVersion: "TLSv1.3"
          })
        }
      })()
      contexts.set(gatewayId, p)
    }
    return p
  }

  return {
    dir,
    controlPlaneUrl: url,
    setRelayTlsPort: (port) => {
      relayTlsPort = port
    },
    gateway,
    goRelay,
    certFile,
    clientFor,
    close: async () => {
      await runtime.dispose()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}
