/**
 * Certificates for the load test and the soak, from src/dev's in-process control plane (the one
 * the relay registers and heartbeats with), at the scale they need: thousands of gateway ids and
 * client certificates in seconds.
 *
 * - Gateways: one SSH key, one user certificate per gateway id signed by the instance SSH client
 *   CA (what the control plane's gateway registration issues, minus a fresh RSA key per gateway),
 *   written as a -certs file for the Go gateway's -connections mode; the inner-TLS server
 *   certificate the `-mode bench` handler needs.
 * - Clients: the control plane's own relay-client issuance (relayPki.issueRelayClient: Infisical's
 *   subject `O=<orgName>-<orgId>, OU=relay-client, CN=<gatewayId>` and gateway-info extension)
 *   with one shared key pair plugged in through KeyOptions.generateKeyPair, so a certificate costs
 *   one RSA signature instead of a key generation. The org in the subject is what the relay's
 *   fair share keys on.
 *
 * bench/lib/material.ts does the same for the benchmarks with a fresh key per client; this file
 * exists because the load test needs orgs and a thousand client certificates.
 */
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { type Layer, ManagedRuntime } from "effect"
import * as ControlPlaneServer from "../../src/dev/ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane, makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import {
  DEFAULT_USER_EXTENSIONS,
  generateRsaSshKey,
  keygenComment,
  relativeValidity,
  sshCertSerial,
  sshKeyFiles
} from "../../src/dev/sshIssue.ts"
import { splitPemChain } from "../../src/pki/pem.ts"
import { relayPkiFromCas } from "../../src/pki/relayPki.ts"
import { generateRsaKeyPair } from "../../src/pki/x509.ts"
import { CERT_TYPE_USER, signCertificate } from "../../src/ssh/certs.ts"
import { formatAuthorizedKeyLine, publicKeyOf } from "../../src/ssh/keys.ts"
import type { GatewayFiles } from "./material.ts"

export const LOAD_RELAY_NAME = "load-relay"
export const LOAD_RELAY_HOST = "127.0.0.1"
export const LOAD_RELAY_SECRET = "load-relay-secret"
const CERT_TTL_SECONDS = 6 * 60 * 60

export interface Org {
  readonly id: string
  readonly name: string
}

/** PEM material of a relay client, for a client in another process. */
export interface ClientPem {
  readonly cert: string
  readonly key: string
  /** Trust anchors for the relay's server certificate. */
  readonly ca: ReadonlyArray<string>
}

export interface LoadMaterial {
  readonly dir: string
  readonly controlPlaneUrl: string
  readonly relayName: string
  readonly relaySecret: string
  /** Where the control plane's relay probe should dial the relay's TLS port. */
  setRelayTlsPort(port: number): void
  /** For the Go gateway (`startGateway` in subjects.ts). */
  readonly gateway: GatewayFiles
  /** Writes a -certs file of `n` fresh gateway ids' user certificates. */
  certFile(name: string, n: number): { readonly path: string; readonly ids: ReadonlyArray<string> }
  readonly defaultOrg: Org
  /** A new org in the control plane. */
  createOrg(name: string): Promise<Org>
  /** Outer-TLS client certificate for `gatewayId` on behalf of `org` (default org; cached). */
  clientCredentials(gatewayId: string, org?: Org): Promise<ClientPem>
  /** The same as a TLS context (cached). */
  clientContext(gatewayId: string, org?: Org): Promise<tls.SecureContext>
  close(): Promise<void>
}

export const makeLoadMaterial = async (): Promise<LoadMaterial> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-load-"))
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
      relayAuthSecret: LOAD_RELAY_SECRET,
      relayTlsAddress: () => ({ host: LOAD_RELAY_HOST, port: relayTlsPort }),
      host: "127.0.0.1",
      port: 0
    }) as Layer.Layer<DevControlPlane | ControlPlaneEndpoint>
  )
  try {
    const { url } = await runtime.runPromise(ControlPlaneEndpoint)
    const cp = await runtime.runPromise(DevControlPlane)
    const scope = { kind: "instance" } as const
    const [relayPki, sshCas, gatewayPki, gatewayKey, sharedClientKeys] = await Promise.all([
      runtime.runPromise(cp.relayPki(scope)),
      runtime.runPromise(cp.sshCas(scope)),
      runtime.runPromise(cp.gatewayPki()),
      generateRsaSshKey(authorities.keyBits),
      generateRsaKeyPair(authorities.keyBits)
    ])
    const comment = keygenComment()
    const gatewayServer = await gatewayPki.issueGatewayServer()
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
            keyId: `client-${LOAD_RELAY_NAME}`,
            principals: [gatewayId], // instance relays: just the gateway id
            ...relativeValidity(CERT_TTL_SECONDS),
            serial: sshCertSerial(),
            extensions: DEFAULT_USER_EXTENSIONS.map((name) => [name, new Uint8Array(0)] as const)
          },
          sshCas.client.key,
          "rsa-sha2-512"
        ),
        comment
      )

    // The production issuance path with the key generation swapped for one shared pair.
    const clientIssuer = relayPkiFromCas(relayPki, { generateKeyPair: () => Promise.resolve(sharedClientKeys) })
    const relayTrust = splitPemChain(relayPki.serverCertificateChain)
    const credentials = new Map<string, Promise<ClientPem>>()
    const clientCredentials: LoadMaterial["clientCredentials"] = (gatewayId, org = cp.defaultOrg) => {
      const key = `${org.id}/${gatewayId}`
      let p = credentials.get(key)
      if (p === undefined) {
        p = clientIssuer
          .issueRelayClient({ gatewayId, gatewayName: "load-gateway", orgId: org.id, orgName: org.name, validitySeconds: CERT_TTL_SECONDS })
          .then((c) => ({ cert: c.clientCertificate, key: c.clientPrivateKey, ca: relayTrust }))
        credentials.set(key, p)
      }
      return p
    }
    const contexts = new Map<string, Promise<tls.SecureContext>>()
    const clientContext: LoadMaterial["clientContext"] = (gatewayId, org = cp.defaultOrg) => {
      const key = `${org.id}/${gatewayId}`
      let p = contexts.get(key)
      if (p === undefined) {
        p = clientCredentials(gatewayId, org).then((c) => tls.createSecureContext({ cert: c.cert, key: c.key, ca: [...c.ca], minVersion: "TLSv1.2" }))
        contexts.set(key, p)
      }
      return p
    }

    return {
      dir,
      controlPlaneUrl: url,
      relayName: LOAD_RELAY_NAME,
      relaySecret: LOAD_RELAY_SECRET,
      setRelayTlsPort: (port) => {
        relayTlsPort = port
      },
      gateway,
      certFile: (name, n) => {
        const ids = Array.from({ length: n }, () => randomUUID())
        return { path: write(`${name.replace(/[^\w.-]+/g, "-")}-certs.pub`, ids.map(userCertLine).join("\n") + "\n"), ids }
      },
      defaultOrg: cp.defaultOrg,
      createOrg: (name) => runtime.runPromise(cp.createOrg({ name })),
      clientCredentials,
      clientContext,
      close: async () => {
        await runtime.dispose()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (err) {
    await runtime.dispose()
    fs.rmSync(dir, { recursive: true, force: true })
    throw err
  }
}
