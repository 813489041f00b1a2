/**
 * The dev control plane against what a relay and a gateway see of the real backend: routes,
 * auth, error bodies, string formats and the certificate profile of what it mints, and its
 * probes dialing a TLS server configured like a relay (and a fake relay + gateway for PONG).
 * Everything on random loopback ports; no sleeping (expiry uses the control plane's clock option).
 */
import { createPrivateKey, X509Certificate } from "node:crypto"
import net from "node:net"
import tls from "node:tls"
import { HttpBody, HttpClient, HttpClientRequest } from "@effect/platform"
import { layer } from "@effect/vitest"
import { Effect, type Layer, ManagedRuntime } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ControlPlaneServer from "../../src/dev/ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane, makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import { parseClientIdentity } from "../../src/pki/clientIdentity.ts"
import { splitPemChain, ZERO_UUID } from "../../src/pki/mint.ts"
import { CERT_TYPE_HOST, CERT_TYPE_USER, parseCertificate, verifyCertificateSignature } from "../../src/ssh/certs.ts"
import { parseAuthorizedKeyLine, parseOpenSshPrivateKey } from "../../src/ssh/keys.ts"
import { SshReader } from "../../src/ssh/wire.ts"

const SECRET = "dev-relay-secret"
const ORG_ID = "7b0a3c4e-7d4e-4f3a-9a35-3f1c2e0d9a10"

// One set of CAs for the whole file: RSA key generation is the slow part.
const authorities = makeAuthorities()

/** Which local port a relay host's TLS listener really is on (tests bind random ports). */
const tlsPorts = new Map<string, number>()
/** Added to the control plane's token clock, to expire tokens without waiting. */
let clockOffsetMs = 0

type Services = DevControlPlane | ControlPlaneEndpoint
const start = (options: ControlPlaneServer.ServerOptions) =>
  ManagedRuntime.make(
    ControlPlaneServer.layer({
      authorities,
      org: { id: ORG_ID, name: "Acme" },
      relayTlsAddress: (host) => ({ host: "127.0.0.1", port: tlsPorts.get(host) ?? 1 }),
      now: () => Date.now() + clockOffsetMs,
      ...options
    }) as Layer.Layer<Services>
  )

let runtime: ManagedRuntime.ManagedRuntime<Services, never>
let apiUrl = ""
const cp = <A, E>(f: (cp: ControlPlaneServer.DevControlPlaneShape) => Effect.Effect<A, E>) =>
  runtime.runPromise(Effect.flatMap(DevControlPlane, f))

beforeAll(async () => {
  runtime = start({ relayAuthSecret: SECRET })
  apiUrl = (await runtime.runPromise(ControlPlaneEndpoint)).apiUrl
})
afterAll(() => runtime.dispose())

interface Reply {
  readonly status: number
  readonly body: any
}

const call = async (
  method: string,
  path: string,
  options: { token?: string; body?: unknown; base?: string; headers?: Record<string, string> } = {}
): Promise<Reply> => {
  const headers: Record<string, string> = { "user-agent": "cli", ...options.headers }
  if (options.token !== undefined) headers["authorization"] = `Bearer ${options.token}`
  if (options.body !== undefined) headers["content-type"] = "application/json"
  const res = await fetch(`${options.base ?? apiUrl}${path}`, {
    method,
    headers,
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) })
  })
  const text = await res.text()
  return { status: res.status, body: text.length > 0 ? JSON.parse(text) : undefined }
}
const post = (path: string, options: Parameters<typeof call>[2] = {}) => call("POST", path, options)

const expectError = (reply: Reply, statusCode: number, error: string, message: unknown) => {
  expect(reply.status).toBe(statusCode)
  expect(reply.body).toEqual({ reqId: expect.stringMatching(/^req-[A-Za-z0-9]{14}$/), statusCode, message, error })
}

/** A machine identity in the default org and an access token for it (via universal auth over HTTP). */
const newIdentity = async (name?: string) => {
  const identity = await cp((c) => c.createIdentity(name === undefined ? {} : { name }))
  const login = await post("/v1/auth/universal-auth/login", {
    body: { clientId: identity.clientId, clientSecret: identity.clientSecret }
  })
  expect(login.status).toBe(200)
  return { ...identity, token: login.body.accessToken as string }
}

const sshCertOf = (line: string) => parseCertificate(parseAuthorizedKeyLine(line).blob)
const sshBlobOf = (line: string) => parseAuthorizedKeyLine(line).blob
const signatureAlgorithm = (signature: Buffer) => new SshReader(signature).string(64)

/** A TLS server configured like the relay's :8443 listener; records each client's certificate. */
const relayLikeServer = async (
  pki: { serverCertificate: string; serverPrivateKey: string; clientCertificateChain: string },
  onClient: (socket: tls.TLSSocket) => void = (socket) => socket.end()
) => {
  const clients: Array<X509Certificate> = []
  // Under TLS 1.3 the client side finishes first: wait for the server's side of a handshake.
  let waiting: Array<(cert: X509Certificate) => void> = []
  const nextClient = (): Promise<X509Certificate> =>
    clients.length > 0 ? Promise.resolve(clients[0]!) : new Promise((resolve) => waiting.push(resolve))
  const server = tls.createServer(
    {
      cert: pki.serverCertificate,
      key: pki.serverPrivateKey,
      ca: splitPemChain(pki.clientCertificateChain),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2"
    },
    (socket) => {
      const cert = socket.getPeerX509Certificate()!
      clients.push(cert)
      for (const resolve of waiting) resolve(cert)
      waiting = []
      onClient(socket)
    }
  )
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  return { server, port, clients, nextClient, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

/** A port nothing listens on. */
const closedPort = async () => {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe("instance relay registration", () => {
  it("returns the relay's certificates in upstream's formats and profile", async () => {
    const before = Date.now()
    const reply = await post("/v1/relays/register-instance-relay", {
      token: SECRET,
      body: { host: "127.0.0.1", name: "relay-a" }
    })
    expect(reply.status).toBe(200)
    const { pki, ssh } = reply.body
    expect(Object.keys(reply.body).sort()).toEqual(["pki", "ssh"])
    expect(Object.keys(pki).sort()).toEqual(["clientCertificateChain", "serverCertificate", "serverPrivateKey"])
    expect(Object.keys(ssh).sort()).toEqual(["clientCAPublicKey", "serverCertificate", "serverPrivateKey"])

    // String formats: LF only, PEM certificates without a trailing newline, PKCS#8 key with one.
    for (const value of [...Object.values(pki), ...Object.values(ssh)] as Array<string>) expect(value).not.toContain("\r")
    expect(pki.serverCertificate).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----$/)
    expect(pki.serverPrivateKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/)
    expect(pki.clientCertificateChain).not.toMatch(/\n$/)
    const chain = splitPemChain(pki.clientCertificateChain)
    expect(chain).toHaveLength(3)
    expect(chain.join("\n")).toBe(pki.clientCertificateChain)
    expect(ssh.serverCertificate).toMatch(/^ssh-rsa-cert-v01@openssh\.com [A-Za-z0-9+/=]+ \S+@\S+\n$/)
    expect(ssh.serverPrivateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n[\s\S]+\n-----END OPENSSH PRIVATE KEY-----\n$/)
    expect(ssh.clientCAPublicKey).toMatch(/^ssh-rsa [A-Za-z0-9+/=]+ \S+@\S+\n$/)

    // The TLS leaf: CN=<host>, O=Infisical, OU=Relay; SAN IP; 24 h; signed by the Instance Relay Server CA.
    const leaf = new X509Certificate(pki.serverCertificate)
    expect(leaf.subject).toBe("CN=127.0.0.1\nO=Infisical\nOU=Relay")
    expect(leaf.subjectAltName).toBe("IP Address:127.0.0.1")
    expect(leaf.issuer).toBe("O=Infisical\nCN=Infisical Instance Relay Server CA")
    expect(leaf.ca).toBe(false)
    expect(leaf.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"])
    const validFrom = Date.parse(leaf.validFrom)
    expect(validFrom).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 - 1000)
    expect(Date.parse(leaf.validTo) - validFrom).toBe(24 * 60 * 60 * 1000)
    expect(leaf.checkPrivateKey(createPrivateKey(pki.serverPrivateKey))).toBe(true)
    const instancePki = await cp((c) => c.relayPki({ kind: "instance" }))
    const serverCa = new X509Certificate(splitPemChain(instancePki.serverCertificateChain)[0]!)
    expect(leaf.verify(serverCa.publicKey)).toBe(true)
    expect(chain.map((pem) => new X509Certificate(pem).subject)).toEqual([
      "O=Infisical\nCN=Infisical Instance Relay Client CA",
      "O=Infisical\nCN=Infisical Instance Relay CA",
      "O=Infisical\nCN=Infisical Instance Root Relay CA"
    ])

    // The SSH host certificate: host type, key id relay-server, principal <host>:2222, 30 days.
    const nowSeconds = Math.floor(Date.now() / 1000)
    const cert = sshCertOf(ssh.serverCertificate)
    expect(cert.certType).toBe(CERT_TYPE_HOST)
    expect(cert.keyId).toBe("relay-server")
    expect(cert.principals).toEqual(["127.0.0.1:2222"])
    expect(cert.criticalOptions).toEqual([])
    expect(cert.extensions).toEqual([])
    expect(Number(cert.validAfter) % 60).toBe(0)
    expect(nowSeconds - Number(cert.validAfter)).toBeGreaterThanOrEqual(0)
    expect(nowSeconds - Number(cert.validAfter)).toBeLessThan(125)
    expect(Number(cert.validBefore) - nowSeconds).toBeGreaterThan(30 * 86400 - 60)
    expect(Number(cert.validBefore) - nowSeconds).toBeLessThanOrEqual(30 * 86400)
    expect(cert.serial).toBeLessThan(2n ** 63n)
    expect(verifyCertificateSignature(cert)).toBe(true)
    expect(signatureAlgorithm(cert.signature)).toBe("rsa-sha2-512")
    const instanceSsh = await cp((c) => c.sshCas({ kind: "instance" }))
    expect(cert.signatureKey.equals(sshBlobOf(instanceSsh.server.publicKey))).toBe(true)
    expect(parseOpenSshPrivateKey(ssh.serverPrivateKey).publicBlob.equals(cert.publicKey.blob)).toBe(true)
    expect(ssh.clientCAPublicKey).toBe(instanceSsh.client.publicKey)

    // What the relay sent, as the request log shows it.
    const logged = (await cp((c) => c.requests)).at(-1)!
    expect(logged.method).toBe("POST")
    expect(logged.path).toBe("/api/v1/relays/register-instance-relay")
    expect(logged.headers["authorization"]).toBe(`Bearer ${SECRET}`)
    expect(logged.headers["user-agent"]).toBe("cli")
    expect(logged.body).toEqual({ host: "127.0.0.1", name: "relay-a" })
  })

  it("re-registration keeps the CAs and the row, issues new keys, and follows a host change", async () => {
    const first = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "127.0.0.1", name: "relay-b" } })
    const second = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "127.0.0.9", name: "relay-b" } })
    expect(second.status).toBe(200)
    expect(second.body.pki.serverPrivateKey).not.toBe(first.body.pki.serverPrivateKey)
    expect(second.body.ssh.serverPrivateKey).not.toBe(first.body.ssh.serverPrivateKey)
    expect(second.body.pki.clientCertificateChain).toBe(first.body.pki.clientCertificateChain)
    expect(second.body.ssh.clientCAPublicKey).toBe(first.body.ssh.clientCAPublicKey)
    expect(sshCertOf(second.body.ssh.serverCertificate).principals).toEqual(["127.0.0.9:2222"])
    const rows = (await cp((c) => c.relays)).filter((r) => r.name === "relay-b")
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ host: "127.0.0.9", orgId: null, identityId: null, heartbeat: null })
  })

  it("refuses a wrong or missing secret with upstream's 401 body", async () => {
    const body = { host: "127.0.0.1", name: "relay-a" }
    expectError(await post("/v1/relays/register-instance-relay", { token: "nope", body }), 401, "UnauthorizedError", "Invalid relay auth secret")
    expectError(await post("/v1/relays/register-instance-relay", { body }), 401, "UnauthorizedError", "Invalid relay auth secret")
    expectError(
      await post("/v1/relays/register-instance-relay", { token: `${SECRET}x`, body }),
      401,
      "UnauthorizedError",
      "Invalid relay auth secret"
    )
  })

  it("validates the name as a 1..32 slug (422 ValidationFailure with zod issues)", async () => {
    const reply = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "127.0.0.1", name: "Bad_Name" } })
    expectError(reply, 422, "ValidationFailure", [
      { code: "custom", message: "name field can only contain lowercase letters, numbers, and hyphens", path: ["name"] }
    ])
    const long = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "h", name: "a".repeat(33) } })
    expect(long.status).toBe(422)
    expect(long.body.message[0]).toMatchObject({ code: "too_big", maximum: 32, path: ["name"] })
    const missing = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { name: "x" } })
    expect(missing.body.message).toEqual([
      { code: "invalid_type", expected: "string", received: "undefined", path: ["host"], message: "Required" }
    ])
  })
})

describe("relay heartbeats", () => {
  it("probes the relay like the backend: mTLS with a heartbeat client certificate, then sets heartbeat", async () => {
    const reply = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "127.0.0.2", name: "beating" } })
    const relay = await relayLikeServer(reply.body.pki)
    tlsPorts.set("127.0.0.2", relay.port)
    try {
      const beat = await post("/v1/relays/heartbeat-instance-relay", { token: SECRET, body: { name: "beating" } })
      expect(beat).toEqual({ status: 200, body: { message: "Successfully triggered heartbeat" } })
      const client = await relay.nextClient()
      expect(relay.clients).toHaveLength(1)
      expect(client.subject).toBe(`O=heartbeat-${ZERO_UUID}\nOU=relay-client\nCN=${ZERO_UUID}`)
      expect(Date.parse(client.validTo) - Date.parse(client.validFrom)).toBe(60_000)
      const identity = parseClientIdentity(new Uint8Array(client.raw))
      expect(identity.gatewayName).toEqual({ _tag: "Valid", name: "heartbeat" })
      const row = (await cp((c) => c.relays)).find((r) => r.name === "beating")!
      expect(row.heartbeat).not.toBeNull()
    } finally {
      await relay.close()
    }
  })

  it("answers 400 with node's error when the relay is not reachable", async () => {
    await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "127.0.0.3", name: "silent" } })
    const port = await closedPort()
    tlsPorts.set("127.0.0.3", port)
    expectError(
      await post("/v1/relays/heartbeat-instance-relay", { token: SECRET, body: { name: "silent" } }),
      400,
      "BadRequest",
      `Relay silent is not reachable: TLS connection error: connect ECONNREFUSED 127.0.0.1:${port}`
    )
  })

  it("distinguishes its 401s and answers 404 for an unknown relay", async () => {
    expectError(await post("/v1/relays/heartbeat-instance-relay", { body: { name: "x" } }), 401, "UnauthorizedError", "Missing authorization header")
    expectError(
      await post("/v1/relays/heartbeat-instance-relay", { token: "wrong", body: { name: "x" } }),
      401,
      "UnauthorizedError",
      "Invalid relay auth secret"
    )
    expectError(
      await post("/v1/relays/heartbeat-instance-relay", { token: SECRET, body: { name: "ghost" } }),
      404,
      "NotFound",
      "Relay with name ghost not found."
    )
    const unconfigured = start({})
    try {
      const base = (await unconfigured.runPromise(ControlPlaneEndpoint)).apiUrl
      expectError(
        await post("/v1/relays/heartbeat-instance-relay", { base, token: SECRET, body: { name: "x" } }),
        401,
        "UnauthorizedError",
        "Relay authentication not configured"
      )
      expectError(
        await post("/v1/relays/register-instance-relay", { base, token: SECRET, body: { host: "h", name: "x" } }),
        401,
        "UnauthorizedError",
        "Invalid relay auth secret"
      )
    } finally {
      await unconfigured.dispose()
    }
  })
})

describe("org relays", () => {
  it("registers one relay per identity; a different host or name is refused", async () => {
    const identity = await newIdentity("relay-identity")
    const first = await post("/v1/relays/register-org-relay", { token: identity.token, body: { host: "relay.example.com", name: "org-relay" } })
    expect(first.status).toBe(200)
    const leaf = new X509Certificate(first.body.pki.serverCertificate)
    expect(leaf.subject).toBe(`CN=relay.example.com\nO=${ORG_ID}\nOU=Relay`)
    expect(leaf.subjectAltName).toBe("DNS:relay.example.com")
    expect(splitPemChain(first.body.pki.clientCertificateChain).map((pem) => new X509Certificate(pem).subject)).toEqual([
      `O=${ORG_ID}\nCN=Infisical Org Relay Client CA`,
      "O=Infisical\nCN=Infisical Organization Relay CA",
      "O=Infisical\nCN=Infisical Instance Root Relay CA"
    ])
    expect((await post("/v1/relays/register-org-relay", { token: identity.token, body: { host: "relay.example.com", name: "org-relay" } })).status).toBe(200)
    expectError(
      await post("/v1/relays/register-org-relay", { token: identity.token, body: { host: "other.example.com", name: "org-relay" } }),
      400,
      "BadRequest",
      `Machine identity already has an existing relay with the name "org-relay" and host "relay.example.com". Delete the existing relay or use a different machine identity.`
    )

    const list = await call("GET", "/v1/relays", { token: identity.token })
    expect(list.status).toBe(200)
    const names = list.body.map((r: { name: string }) => r.name)
    expect(names.indexOf("relay-a")).toBeLessThan(names.indexOf("org-relay"))
    expect(list.body.find((r: { name: string }) => r.name === "org-relay")).toMatchObject({
      orgId: ORG_ID,
      identityId: identity.identityId,
      host: "relay.example.com",
      heartbeat: null
    })
  })

  it("needs a valid identity token", async () => {
    const body = { host: "h.example.com", name: "x" }
    expectError(await post("/v1/relays/register-org-relay", { body }), 401, "UnauthorizedError", "Token missing")
    expectError(
      await post("/v1/relays/register-org-relay", { token: SECRET, body }),
      403,
      "TokenError",
      "The provided access token is malformed. Please use a valid token or generate a new one and try again."
    )
  })
})

describe("machine identity auth", () => {
  it("logs in with universal auth and renews the token", async () => {
    const identity = await cp((c) => c.createIdentity({ accessTokenTTL: 600, accessTokenMaxTTL: 3600 }))
    const login = await post("/v1/auth/universal-auth/login", {
      body: { clientId: identity.clientId, clientSecret: identity.clientSecret }
    })
    expect(login.body).toEqual({ accessToken: expect.any(String), expiresIn: 600, accessTokenMaxTTL: 3600, tokenType: "Bearer" })
    expect((await call("GET", "/v1/relays", { token: login.body.accessToken })).status).toBe(200)

    const renewed = await post("/v1/auth/token/renew", { body: { accessToken: login.body.accessToken } })
    expect(renewed.body).toEqual({ accessToken: expect.any(String), expiresIn: 600, accessTokenMaxTTL: 3600, tokenType: "Bearer" })
    expect((await call("GET", "/v1/relays", { token: renewed.body.accessToken })).status).toBe(200)

    expectError(
      await post("/v1/auth/universal-auth/login", { body: { clientId: identity.clientId, clientSecret: "wrong" } }),
      401,
      "UnauthorizedError",
      "Invalid credentials"
    )
  })

  it("refuses expired tokens and renewals past the max TTL", async () => {
    const identity = await cp((c) => c.createIdentity({ accessTokenTTL: 600, accessTokenMaxTTL: 900 }))
    const { accessToken } = await cp((c) => c.issueAccessToken(identity.identityId))
    try {
      clockOffsetMs = 500_000
      expectError(
        await post("/v1/auth/token/renew", { body: { accessToken } }),
        401,
        "UnauthorizedError",
        "Failed to renew MI access token past its Max TTL expiration"
      )
      clockOffsetMs = 601_000
      const { accessToken: other } = await cp((c) => c.issueAccessToken(identity.identityId))
      clockOffsetMs = 1_300_000
      expectError(await call("GET", "/v1/relays", { token: other }), 403, "TokenError", "Your token has expired. Please re-authenticate.")
    } finally {
      clockOffsetMs = 0
    }
  })

  it("accepts JWT-based logins through the verifier", async () => {
    const identity = await cp((c) => c.createIdentity({ jwt: "k8s-token" }))
    const ok = await post("/v1/auth/kubernetes-auth/login", { body: { identityId: identity.identityId, jwt: "k8s-token" } })
    expect(ok.status).toBe(200)
    expect(ok.body.tokenType).toBe("Bearer")
    const bad = await post("/v1/auth/jwt-auth/login", { body: { identityId: identity.identityId, jwt: "other" } })
    expect(bad.status).toBe(401)
  })
})

describe("v2 relays", () => {
  it("enrolls with a single-use token, connects and invalidates older relay tokens on re-login", async () => {
    const admin = await newIdentity()
    const created = await post("/v2/relays", {
      token: admin.token,
      body: { name: "enrolled", host: "127.0.0.4", authMethod: { method: "token" } }
    })
    expect(created.status).toBe(200)
    expect(created.body).toMatchObject({ name: "enrolled", host: "127.0.0.4", canRevoke: false, authMethod: { method: "token", config: {} } })
    const relayId: string = created.body.id

    const minted = await post(`/v2/relays/${relayId}/token-auth/generate-enrollment-token`, { token: admin.token })
    expect(minted.status).toBe(200)
    expect(minted.body.token).toMatch(/^gwe_[A-Za-z0-9_-]{43}$/)
    expect(Date.parse(minted.body.expiresAt) - Date.now()).toBeGreaterThan(3590_000)

    const login = await post("/v2/relays/login", { body: { method: "token", token: minted.body.token } })
    expect(login.body).toEqual({ accessToken: expect.any(String), relayId, tokenType: "Bearer" })
    expectError(await post("/v2/relays/login", { body: { method: "token", token: minted.body.token } }), 400, "BadRequest", "Invalid enrollment token")

    const connect = await post("/v2/relays/connect", { token: login.body.accessToken })
    expect(connect.status).toBe(200)
    expect(connect.body.relayId).toBe(relayId)
    expect(new X509Certificate(connect.body.pki.serverCertificate).subject).toBe(`CN=127.0.0.4\nO=${ORG_ID}\nOU=Relay`)
    expect(sshCertOf(connect.body.ssh.serverCertificate).principals).toEqual(["127.0.0.4:2222"])

    // A new login (new token) bumps tokenVersion: the first relay JWT stops working.
    const again = await cp((c) => c.generateEnrollmentToken(relayId))
    const second = await post("/v2/relays/login", { body: { method: "token", token: again.token } })
    expect(second.status).toBe(200)
    expectError(await post("/v2/relays/connect", { token: login.body.accessToken }), 401, "UnauthorizedError", "Relay access token has been revoked")
    expect((await post("/v2/relays/connect", { token: second.body.accessToken })).status).toBe(200)
    expectError(
      await post("/v2/relays/connect", { token: admin.token }),
      403,
      "Forbidden access to /api/v2/relays/connect",
      "You are not allowed to access this resource"
    )
  })

  it("refuses expired enrollment tokens and, by default, AWS logins", async () => {
    const relay = await cp((c) => c.createRelay({ name: "expiring", host: "127.0.0.5", authMethod: { method: "token" } }))
    const { token } = await cp((c) => c.generateEnrollmentToken(relay.id))
    clockOffsetMs = 3601_000
    try {
      expectError(await post("/v2/relays/login", { body: { method: "token", token } }), 400, "BadRequest", "Enrollment token has expired")
    } finally {
      clockOffsetMs = 0
    }
    const aws = await cp((c) =>
      c.createRelay({
        name: "aws-relay",
        host: "127.0.0.6",
        authMethod: { method: "aws", stsEndpoint: "https://sts.amazonaws.com/", allowedPrincipalArns: "", allowedAccountIds: "123456789012" }
      })
    )
    const login = {
      method: "aws",
      relayId: aws.id,
      iamHttpRequestMethod: "POST",
      iamRequestBody: Buffer.from("Action=GetCallerIdentity&Version=2011-06-15").toString("base64"),
      iamRequestHeaders: Buffer.from("{}").toString("base64")
    }
    expectError(await post("/v2/relays/login", { body: login }), 401, "UnauthorizedError", "STS verification failed")
  })
})

describe("gateways", () => {
  it("registers a gateway on an org relay: user certificate signed by the relay's client CA", async () => {
    const relayIdentity = await newIdentity()
    const relay = await post("/v1/relays/register-org-relay", { token: relayIdentity.token, body: { host: "127.0.0.7", name: "gw-relay" } })
    const gateway = await newIdentity("gateway-identity")
    const reply = await post("/v2/gateways", { token: gateway.token, body: { relayName: "gw-relay", name: "my-gateway" } })
    expect(reply.status).toBe(200)
    const { gatewayId, relayHost, pki, ssh } = reply.body
    expect(relayHost).toBe("127.0.0.7")
    expect(splitPemChain(pki.clientCertificateChain).map((pem) => new X509Certificate(pem).subject)).toEqual([
      `O=${ORG_ID}\nCN=Infisical Gateway Client CA`,
      `O=${ORG_ID}\nCN=Infisical Gateway Root CA`
    ])
    const server = new X509Certificate(pki.serverCertificate)
    expect(server.subject).toBe(`O=${ORG_ID}\nCN=Gateway`)
    expect(server.subjectAltName).toBe("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1")

    const cert = sshCertOf(ssh.clientCertificate)
    expect(cert.certType).toBe(CERT_TYPE_USER)
    expect(cert.keyId).toBe("client-gw-relay")
    expect(cert.principals).toEqual([gatewayId, "my-gateway"])
    expect(cert.extensions.map(([name]) => name)).toEqual([
      "permit-X11-forwarding",
      "permit-agent-forwarding",
      "permit-port-forwarding",
      "permit-pty",
      "permit-user-rc"
    ])
    expect(Number(cert.validBefore) - Math.floor(Date.now() / 1000)).toBeGreaterThan(86400 - 60)
    expect(verifyCertificateSignature(cert)).toBe(true)
    expect(cert.signatureKey.equals(sshBlobOf(relay.body.ssh.clientCAPublicKey))).toBe(true)
    expect(sshBlobOf(ssh.serverCAPublicKey).equals(sshCertOf(relay.body.ssh.serverCertificate).signatureKey)).toBe(true)
    expect(parseOpenSshPrivateKey(ssh.clientPrivateKey).publicBlob.equals(cert.publicKey.blob)).toBe(true)

    // Upsert on the identity: same id, new name.
    const again = await post("/v2/gateways", { token: gateway.token, body: { relayName: "gw-relay", name: "renamed" } })
    expect(again.body.gatewayId).toBe(gatewayId)
    const list = await call("GET", "/v2/gateways", { token: gateway.token })
    expect(list.body.filter((g: { id: string }) => g.id === gatewayId)).toEqual([
      expect.objectContaining({ name: "renamed", identityId: gateway.identityId, heartbeat: null, identity: { name: "gateway-identity", id: gateway.identityId } })
    ])
    expectError(
      await post("/v2/gateways", { token: gateway.token, body: { relayName: "nowhere", name: "x" } }),
      404,
      "NotFound",
      "Relay nowhere not found"
    )
  })

  it("names only the gateway id on instance relays", async () => {
    const instance = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "127.0.0.8", name: "shared" } })
    const gateway = await newIdentity()
    const reply = await post("/v2/gateways", { token: gateway.token, body: { relayName: "shared", name: "gw-on-shared" } })
    const cert = sshCertOf(reply.body.ssh.clientCertificate)
    expect(cert.principals).toEqual([reply.body.gatewayId])
    expect(cert.keyId).toBe("client-shared")
    expect(cert.signatureKey.equals(sshBlobOf(instance.body.ssh.clientCAPublicKey))).toBe(true)
  })

  it("heartbeats through the relay to the gateway: relay-client cert naming the gateway, inner TLS, PONG", async () => {
    const relayReg = await post("/v1/relays/register-instance-relay", { token: SECRET, body: { host: "127.0.0.10", name: "ping-relay" } })
    const gatewayIdentity = await newIdentity()
    const gateway = await post("/v2/gateways", { token: gatewayIdentity.token, body: { relayName: "ping-relay", name: "pinger" } })
    const gwPki = gateway.body.pki
    const alpns: Array<string | false | null> = []
    // The relay part pipes nothing: it terminates the inner TLS itself, as the gateway would.
    const relay = await relayLikeServer(relayReg.body.pki, (outer) => {
      const inner = new tls.TLSSocket(outer, {
        isServer: true,
        cert: gwPki.serverCertificate,
        key: gwPki.serverPrivateKey,
        ca: splitPemChain(gwPki.clientCertificateChain),
        requestCert: true,
        rejectUnauthorized: true,
        ALPNProtocols: ["infisical-ping"]
      })
      inner.on("secure", () => {
        alpns.push(inner.alpnProtocol)
        inner.write("PONG\n")
      })
      inner.on("error", () => outer.destroy())
    })
    tlsPorts.set("127.0.0.10", relay.port)
    try {
      const beat = await post("/v2/gateways/heartbeat", { token: gatewayIdentity.token })
      expect(beat).toEqual({ status: 200, body: { message: "Successfully triggered heartbeat" } })
      expect(alpns).toEqual(["infisical-ping"])
      const client = await relay.nextClient()
      expect(client.subject).toBe(`O=Acme-${ORG_ID}\nOU=relay-client\nCN=${gateway.body.gatewayId}`)
      expect(parseClientIdentity(new Uint8Array(client.raw)).gatewayName).toEqual({ _tag: "Valid", name: "pinger" })
      const row = (await cp((c) => c.gateways)).find((g) => g.id === gateway.body.gatewayId)!
      expect(row.heartbeat).not.toBeNull()

      // The same path, programmatically: a backend-style socket to the gateway.
      const pong = await cp((c) =>
        Effect.scoped(
          Effect.flatMap(c.dialGateway(gateway.body.gatewayId, "infisical-ping"), (socket) =>
            Effect.promise(() => new Promise<string>((resolve) => socket.once("data", (d: Buffer) => resolve(d.toString())))))
        )
      )
      expect(pong).toBe("PONG\n")
    } finally {
      await relay.close()
    }

    tlsPorts.set("127.0.0.10", await closedPort())
    const failed = await post("/v2/gateways/heartbeat", { token: gatewayIdentity.token })
    expect(failed.status).toBe(400)
    expect(failed.body.message).toMatch(/^TLS connection error: connect ECONNREFUSED 127\.0\.0\.1:\d+$/)
  })

  it("mints relay-client credentials for a gateway programmatically", async () => {
    const issued = await cp((c) => c.issueRelayClient({ relay: "relay-a", gatewayId: "g-1", gatewayName: "gw" }))
    expect(issued.relayHost).toBe("127.0.0.1")
    const cert = new X509Certificate(issued.clientCertificate)
    expect(cert.subject).toBe(`O=Acme-${ORG_ID}\nOU=relay-client\nCN=g-1`)
    expect(cert.issuer).toBe("O=Infisical\nCN=Infisical Instance Relay Client CA")
    expect(Date.parse(cert.validTo) - Date.parse(cert.validFrom)).toBe(300_000)
  })
})

describe("request log and unknown routes", () => {
  it("answers unknown routes like fastify and logs every request", async () => {
    const reply = await call("GET", "/v9/nothing?x=1")
    expect(reply).toEqual({ status: 404, body: { message: "Route GET:/api/v9/nothing?x=1 not found", error: "Not Found", statusCode: 404 } })
    const logged = (await cp((c) => c.requests)).at(-1)!
    expect(logged).toMatchObject({ method: "GET", path: "/api/v9/nothing", url: "/api/v9/nothing?x=1", body: undefined })
  })
})

layer(ControlPlaneServer.layerTest({ authorities, org: { id: ORG_ID }, relayAuthSecret: SECRET }), { excludeTestServices: true })(
  "on NodeHttpServer.layerTest",
  (it) => {
    it.effect("serves the Effect HttpClient that layerTest provides", () =>
      Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const request = HttpClientRequest.post("/api/v1/relays/register-instance-relay").pipe(
          HttpClientRequest.bearerToken(SECRET),
          HttpClientRequest.setBody(HttpBody.unsafeJson({ host: "10.0.0.1", name: "via-layer-test" }))
        )
        const body = yield* Effect.scoped(Effect.flatMap(client.execute(request), (res) => res.json))
        expect(new X509Certificate((body as { pki: { serverCertificate: string } }).pki.serverCertificate).subjectAltName)
          .toBe("IP Address:10.0.0.1")
        const relays = yield* Effect.flatMap(DevControlPlane, (c) => c.relays)
        expect(relays.map((r) => r.name)).toEqual(["via-layer-test"])
      }))
  }
)
