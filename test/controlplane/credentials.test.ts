/**
 * Checklist 38: the relay parses what the control plane issues: PKCS#8 PEM server keys,
 * concatenated-PEM chains (whatever the whitespace between blocks), OpenSSH private keys, and
 * authorized_keys-format certificates and keys with trailing comments; a bundle whose keys do not
 * match its certificates is refused (so it is never swapped in).
 */
import { X509Certificate } from "node:crypto"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Effect, Redacted, Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { RelayCredentialsResponse } from "../../src/controlplane/Api.ts"
import { toBundle } from "../../src/Credentials.ts"
import { CERT_TYPE_HOST } from "../../src/ssh/certs.ts"
import { type ControlPlaneHandle, startControlPlane } from "./support.ts"

const SECRET = "credentials-secret"
let cp: ControlPlaneHandle
let issued: RelayCredentialsResponse
let other: RelayCredentialsResponse

const register = (name: string) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const client = yield* HttpClient.HttpClient
      const res = yield* client.execute(
        HttpClientRequest.post(`${cp.apiUrl}/v1/relays/register-instance-relay`).pipe(
          HttpClientRequest.bearerToken(SECRET),
          HttpClientRequest.bodyUnsafeJson({ host: "127.0.0.1", name })
        )
      )
      return yield* Effect.flatMap(res.json, Schema.decodeUnknown(RelayCredentialsResponse))
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici))
  )

beforeAll(async () => {
  cp = await startControlPlane({ relayAuthSecret: SECRET })
  issued = await register("relay-creds-a")
  other = await register("relay-creds-b")
})
afterAll(() => cp?.close())

const bundleOf = (response: RelayCredentialsResponse) => Effect.runPromise(Effect.either(toBundle(response, new Date())))

describe("registration responses become credential bundles", () => {
  it("38: the control plane's own output: PKCS#8 key, 3-certificate client chain, OpenSSH key and host certificate", async () => {
    // Private keys are Redacted from the moment they are decoded.
    expect(Redacted.isRedacted(issued.pki.serverPrivateKey)).toBe(true)
    expect(String(issued.ssh.serverPrivateKey)).toBe("<redacted>")
    expect(Redacted.value(issued.pki.serverPrivateKey)).toMatch(/^-----BEGIN PRIVATE KEY-----\n/)
    expect(Redacted.value(issued.ssh.serverPrivateKey)).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n/)
    expect(issued.ssh.serverCertificate).toMatch(/^ssh-rsa-cert-v01@openssh\.com \S+ \S+@\S+\n$/)
    const result = await bundleOf(issued)
    if (result._tag === "Left") throw result.left
    const bundle = result.right
    expect(bundle.tls.ca).toHaveLength(3)
    expect(bundle.tlsNotAfter.getTime() - bundle.tlsNotBefore.getTime()).toBe(24 * 3600 * 1000)
    expect(new X509Certificate(bundle.tls.cert as string).subjectAltName).toBe("IP Address:127.0.0.1")
    expect(bundle.ssh.hostCertificate.certType).toBe(CERT_TYPE_HOST)
    expect(bundle.ssh.hostCertificate.principals).toEqual(["127.0.0.1:2222"])
    expect(bundle.ssh.clientCaPublicKey.length).toBeGreaterThan(200)
  })

  it("38: tolerant of whitespace between PEM blocks, CRLF, and comments with spaces", async () => {
    const chain = issued.pki.clientCertificateChain.split(/(?<=-----END CERTIFICATE-----)\n/)
    const messy: RelayCredentialsResponse = {
      ...issued,
      pki: {
        ...issued.pki,
        serverCertificate: `\n${issued.pki.serverCertificate}\n\n`,
        clientCertificateChain: `  ${chain.join("\r\n\r\n  ")}\r\n`
      },
      ssh: {
        ...issued.ssh,
        serverCertificate: issued.ssh.serverCertificate.replace(/\n$/, "") + " and a long comment\n",
        clientCAPublicKey: issued.ssh.clientCAPublicKey.replace(/\n$/, "") + " ca comment with spaces"
      }
    }
    const result = await bundleOf(messy)
    expect(result._tag).toBe("Right")
    if (result._tag === "Right") expect(result.right.tls.ca).toHaveLength(3)
  })

  it("refuses keys that do not match their certificates, and an empty chain", async () => {
    const wrongTlsKey = await bundleOf({ ...issued, pki: { ...issued.pki, serverPrivateKey: other.pki.serverPrivateKey } })
    expect(wrongTlsKey._tag).toBe("Left")
    const wrongSshKey = await bundleOf({ ...issued, ssh: { ...issued.ssh, serverPrivateKey: other.ssh.serverPrivateKey } })
    expect(wrongSshKey._tag === "Left" && wrongSshKey.left.message).toBe(
      "invalid relay credentials: the SSH host private key does not match the host certificate"
    )
    const noChain = await bundleOf({ ...issued, pki: { ...issued.pki, clientCertificateChain: "" } })
    expect(noChain._tag === "Left" && noChain.left.message).toBe("invalid relay credentials: clientCertificateChain holds no certificate")
    // No private key text ever makes it into such an error.
    for (const r of [wrongTlsKey, wrongSshKey, noChain]) {
      if (r._tag === "Left") {
        expect(r.left.message).not.toContain("PRIVATE KEY")
        expect(JSON.stringify(r.left)).not.toContain(Redacted.value(other.pki.serverPrivateKey).slice(40, 80))
      }
    }
  })
})
