/**
 * `relay start --auth-method=<m>` for every machine-identity method of protocol.md §7, end to end
 * against the in-process control plane: the login (its body exactly as the SDK sends it, with the
 * credential fetched from a fake Azure IMDS / GCP metadata / IAM Credentials server where the
 * method needs one), then register-org-relay with the identity token, listeners up with the
 * issued certificates and a successful heartbeat probe. Upstream's own `--auth-method` path is
 * broken (missing `organization-slug` flag); ours must work.
 *
 * Secrets (client secret, JWTs, access tokens, AWS keys) must appear in no log line and no error.
 */
import { createVerify, generateKeyPairSync } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Exit } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { AuthMethodName } from "../../src/RelayConfig.ts"
import { verifySigV4 } from "../controlplane/sigv4.ts"
import { type ControlPlaneHandle, requestsTo, runRelay, startControlPlane, waitForRelayLog } from "../controlplane/support.ts"

const AWS = { accessKeyId: "AKIDIDENTITYTEST01", secretAccessKey: "identity-aws-secret/Zz9" }
const JWTS = {
  kubernetes: "k8s.sa-token.Ab12",
  azure: "azure.imds-token.Cd34",
  "gcp-id-token": "gcp.identity-token.Ef56",
  "gcp-iam": "gcp.iam-signed-jwt.Gh78",
  "oidc-auth": "oidc.jwt.Ij90",
  "jwt-auth": "plain.jwt.Kl12"
} as const
const CLIENT_SECRET = "universal-client-secret-Mn34"
const SERVICE_ACCOUNT = "relay@project.iam.gserviceaccount.com"

const savedEnv = { ...process.env }
let cp: ControlPlaneHandle
let cloud: http.Server
let cloudUrl = ""
const cloudRequests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = []
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-identity-"))
const gcpKey = generateKeyPairSync("rsa", { modulusLength: 2048 })
const keyFile = path.join(dir, "sa.json")
const saTokenFile = path.join(dir, "k8s-token")

/** Checks an RS256 JWT's signature and claims; undefined when it does not verify. */
const verifyJwt = (jwt: string) => {
  const [h, p, s] = jwt.split(".")
  if (!h || !p || !s) return undefined
  const ok = createVerify("RSA-SHA256").update(`${h}.${p}`).verify(gcpKey.publicKey, Buffer.from(s, "base64url"))
  return ok
    ? { header: JSON.parse(Buffer.from(h, "base64url").toString()), claims: JSON.parse(Buffer.from(p, "base64url").toString()) }
    : undefined
}

/** Azure IMDS, GCP metadata and IAM Credentials, answering like the real ones. */
const cloudHandler = (req: http.IncomingMessage, res: http.ServerResponse) => {
  let body = ""
  req.on("data", (c: Buffer) => (body += c.toString()))
  req.on("end", () => {
    cloudRequests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body })
    const url = req.url ?? ""
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify(value))
    }
    if (url === "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com/") {
      return req.headers["metadata"] === "true"
        ? json(200, { access_token: JWTS.azure, token_type: "Bearer" })
        : json(400, { error: "invalid_request" })
    }
    const gcp = /^\/computeMetadata\/v1\/instance\/service-accounts\/default\/identity\?audience=([^&]+)&format=full$/.exec(url)
    if (gcp && req.method === "GET") {
      if (req.headers["metadata-flavor"] !== "Google") return json(403, { error: "missing Metadata-Flavor" })
      res.writeHead(200, { "content-type": "text/html" })
      return res.end(JWTS["gcp-id-token"])
    }
    if (req.method === "POST" && url === `/v1/projects/-/serviceAccounts/${SERVICE_ACCOUNT}:signJwt`) {
      const bearer = (req.headers["authorization"] ?? "").replace(/^Bearer /, "")
      const verified = verifyJwt(bearer)
      if (!verified || verified.claims.aud !== "https://iamcredentials.googleapis.com/" || verified.claims.iss !== SERVICE_ACCOUNT) {
        return json(401, { error: { code: 401, status: "UNAUTHENTICATED" } })
      }
      return json(200, { keyId: "key-1", signedJwt: JWTS["gcp-iam"] })
    }
    json(404, { error: "not found" })
  })
}

beforeAll(async () => {
  cloud = http.createServer(cloudHandler)
  await new Promise<void>((resolve) => cloud.listen(0, "127.0.0.1", resolve))
  cloudUrl = `http://127.0.0.1:${(cloud.address() as net.AddressInfo).port}`
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: AWS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: AWS.secretAccessKey,
    AWS_REGION: "us-west-2",
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/nonexistent/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials"
  })
  delete process.env["AWS_SESSION_TOKEN"]
  fs.writeFileSync(saTokenFile, `${JWTS.kubernetes}\n`)
  fs.writeFileSync(
    keyFile,
    JSON.stringify({
      type: "service_account",
      client_email: SERVICE_ACCOUNT,
      private_key_id: "kid-1",
      private_key: gcpKey.privateKey.export({ type: "pkcs8", format: "pem" }).toString()
    })
  )
  cp = await startControlPlane({
    verifyIdentityLogin: (attempt) => {
      if (attempt.method !== "aws") {
        return attempt.body["jwt"] === attempt.identity.jwt ? { ok: true } : { ok: false, message: "Access denied: JWT verification failed" }
      }
      const headers = JSON.parse(Buffer.from(String(attempt.body["iamRequestHeaders"]), "base64").toString()) as Record<string, string>
      const body = Buffer.from(String(attempt.body["iamRequestBody"]), "base64").toString()
      const check = verifySigV4(headers, body, AWS.secretAccessKey)
      return check.ok ? { ok: true } : { ok: false, message: `STS verification failed: ${check.reason}` }
    }
  })
})

afterAll(async () => {
  await cp?.close()
  await new Promise<void>((resolve) => (cloud ? cloud.close(() => resolve()) : resolve()))
  for (const key of Object.keys(process.env)) if (!(key in savedEnv)) delete process.env[key]
  Object.assign(process.env, savedEnv)
})

interface MethodCase {
  readonly method: AuthMethodName
  readonly endpoint: string
  readonly flags: (identityId: string, clientId: string) => Record<string, string>
  readonly body: (identityId: string, clientId: string) => Record<string, string> | ((body: Record<string, unknown>) => void)
  readonly secrets: ReadonlyArray<string>
}

const jwtBody = (jwt: string) => (identityId: string) => ({ identityId, jwt })

const cases: ReadonlyArray<MethodCase> = [
  {
    method: "universal-auth",
    endpoint: "/api/v1/auth/universal-auth/login",
    flags: (_id, clientId) => ({ clientId, clientSecret: CLIENT_SECRET }),
    body: (_id, clientId) => ({ clientId, clientSecret: CLIENT_SECRET }),
    secrets: [CLIENT_SECRET]
  },
  {
    method: "kubernetes",
    endpoint: "/api/v1/auth/kubernetes-auth/login",
    flags: (id) => ({ machineIdentityId: id, serviceAccountTokenPath: saTokenFile }),
    body: jwtBody(JWTS.kubernetes),
    secrets: [JWTS.kubernetes]
  },
  {
    method: "azure",
    endpoint: "/api/v1/auth/azure-auth/login",
    flags: (id) => ({ machineIdentityId: id }),
    body: jwtBody(JWTS.azure),
    secrets: [JWTS.azure]
  },
  {
    method: "gcp-id-token",
    endpoint: "/api/v1/auth/gcp-auth/login",
    flags: (id) => ({ machineIdentityId: id }),
    body: jwtBody(JWTS["gcp-id-token"]),
    secrets: [JWTS["gcp-id-token"]]
  },
  {
    method: "gcp-iam",
    endpoint: "/api/v1/auth/gcp-auth/login",
    flags: (id) => ({ machineIdentityId: id, serviceAccountKeyFilePath: keyFile }),
    body: jwtBody(JWTS["gcp-iam"]),
    secrets: [JWTS["gcp-iam"]]
  },
  {
    method: "aws-iam",
    endpoint: "/api/v1/auth/aws-auth/login",
    flags: (id) => ({ machineIdentityId: id }),
    body: (identityId) => (body: Record<string, unknown>) => {
      expect(Object.keys(body)).toEqual(["identityId", "iamHttpRequestMethod", "iamRequestBody", "iamRequestHeaders"])
      expect(body).toMatchObject({ identityId, iamHttpRequestMethod: "POST" })
      expect(Buffer.from(String(body["iamRequestBody"]), "base64").toString()).toBe("Action=GetCallerIdentity&Version=2011-06-15")
      const headers = JSON.parse(Buffer.from(String(body["iamRequestHeaders"]), "base64").toString()) as Record<string, string>
      // aws-iam keeps Content-Length (and Content-Type, X-Amz-Date), unlike the relay login.
      expect(Object.keys(headers)).toEqual(["Authorization", "Content-Length", "Content-Type", "Host", "X-Amz-Date"])
      expect(headers).toMatchObject({ "Content-Length": "43", Host: "sts.us-west-2.amazonaws.com" })
    },
    secrets: [AWS.secretAccessKey]
  },
  {
    method: "oidc-auth",
    endpoint: "/api/v1/auth/oidc-auth/login",
    flags: (id) => ({ machineIdentityId: id, jwt: JWTS["oidc-auth"] }),
    body: jwtBody(JWTS["oidc-auth"]),
    secrets: [JWTS["oidc-auth"]]
  },
  {
    method: "jwt-auth",
    endpoint: "/api/v1/auth/jwt-auth/login",
    flags: (id) => ({ machineIdentityId: id, jwt: JWTS["jwt-auth"] }),
    body: jwtBody(JWTS["jwt-auth"]),
    secrets: [JWTS["jwt-auth"]]
  }
]

const jwtOf = (method: AuthMethodName): string | undefined => (JWTS as Record<string, string>)[method]

describe("--auth-method: every machine-identity login, end to end", () => {
  for (const c of cases) {
    it(`${c.method}: logs in, registers with the identity token, serves the issued certificates, heartbeats`, async () => {
      const name = `relay-${c.method}`.slice(0, 32)
      const identity = await cp.cp((x) => {
        const jwt = jwtOf(c.method)
        return x.createIdentity({ name: `${name}-id`, clientSecret: CLIENT_SECRET, ...(jwt === undefined ? {} : { jwt }) })
      })
      const first = (await cp.requests()).length
      const cloudFirst = cloudRequests.length
      const relay = await runRelay({
        controlPlane: cp,
        host: `${name}.test`,
        flags: { name, authMethod: c.method, ...c.flags(identity.identityId, identity.clientId) },
        env: {
          INFISICAL_AZURE_METADATA_URL: cloudUrl,
          GCE_METADATA_HOST: cloudUrl.replace("http://", ""),
          INFISICAL_GCP_IAM_CREDENTIALS_URL: cloudUrl,
          INFISICAL_CUSTOM_HEADERS: "X-Proxy-Auth=relay"
        }
      })
      try {
        await waitForRelayLog(relay, /^Relay is reachable by Infisical$/)
        const sent = (await cp.requests()).slice(first)
        const [login] = requestsTo(sent, c.endpoint)
        expect(login, `no request to ${c.endpoint}`).toBeDefined()
        expect(login!.headers["authorization"]).toBeUndefined()
        expect(login!.headers["user-agent"]).toBe("cli")
        expect(login!.headers["x-proxy-auth"]).toBe("relay")
        const expected = c.body(identity.identityId, identity.clientId)
        if (typeof expected === "function") expected(login!.body as Record<string, unknown>)
        else expect(login!.rawBody).toBe(JSON.stringify(expected))

        const [register] = requestsTo(sent, "/api/v1/relays/register-org-relay")
        expect(register!.headers["authorization"]).toMatch(/^Bearer ey/)
        expect(requestsTo(sent, "/api/v1/relays/heartbeat-org-relay")[0]!.headers["authorization"]).toBe(
          register!.headers["authorization"]
        )
        const row = (await cp.cp((x) => x.relays)).find((r) => r.name === name)
        expect(row).toMatchObject({ identityId: identity.identityId, host: `${name}.test` })
        expect(row?.heartbeat).not.toBeNull()

        // Cloud endpoints are contacted only by the method that needs them.
        const cloudSeen = cloudRequests.slice(cloudFirst).map((r) => r.url.split("?")[0])
        const expectedCloud = c.method === "azure"
          ? ["/metadata/identity/oauth2/token"]
          : c.method === "gcp-id-token"
          ? ["/computeMetadata/v1/instance/service-accounts/default/identity"]
          : c.method === "gcp-iam"
          ? [`/v1/projects/-/serviceAccounts/${SERVICE_ACCOUNT}:signJwt`]
          : []
        expect(cloudSeen).toEqual(expectedCloud)
        if (c.method === "gcp-iam") {
          expect(JSON.parse(cloudRequests.at(-1)!.body)).toEqual({
            payload: JSON.stringify({ sub: SERVICE_ACCOUNT, aud: identity.identityId })
          })
        }
        if (c.method === "gcp-id-token") {
          expect(cloudRequests.at(-1)!.url).toContain(`audience=${identity.identityId}&format=full`)
        }

        const logs = relay.logs.text()
        for (const secret of [...c.secrets, register!.headers["authorization"]!.slice(7)]) expect(logs).not.toContain(secret)
      } finally {
        await relay.stop()
      }
    })
  }
})

describe("secrets stay out of logs and errors", () => {
  it("a failed login: upstream's message, the status, and neither the secret nor the id of a credential", async () => {
    const identity = await cp.cp((x) => x.createIdentity({ name: "relay-badsecret-id" }))
    const wrong = "wrong-client-secret-Qr56"
    const relay = await runRelay({
      controlPlane: cp,
      host: "relay-badsecret.test",
      flags: { name: "relay-badsecret", authMethod: "universal-auth", clientId: identity.clientId, clientSecret: wrong }
    })
    const exit = await relay.exit
    expect(Exit.isFailure(exit)).toBe(true)
    if (!Exit.isFailure(exit)) return
    const failure = Cause.failureOption(exit.cause)
    expect(failure._tag).toBe("Some")
    const error = (failure as { value: { _tag: string; error: string; messages: ReadonlyArray<string>; message: string } }).value
    expect(error._tag).toBe("StartupError")
    expect(error.messages).toEqual(["unable to get infisical client"])
    expect(error.error).toBe("universal-auth login: 401 Invalid credentials")
    for (const text of [relay.logs.text(), Cause.pretty(exit.cause), JSON.stringify(exit), error.message]) {
      expect(text).not.toContain(wrong)
      expect(text).not.toContain(identity.clientSecret)
    }
  })

  it("a successful login with every secret given through the environment leaves none in the logs", async () => {
    const identity = await cp.cp((x) => x.createIdentity({ name: "relay-envsecret-id", clientSecret: CLIENT_SECRET }))
    const relay = await runRelay({
      controlPlane: cp,
      host: "relay-envsecret.test",
      flags: { name: "relay-envsecret" },
      env: {
        INFISICAL_AUTH_METHOD: "universal-auth",
        INFISICAL_UNIVERSAL_AUTH_CLIENT_ID: identity.clientId,
        INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET: CLIENT_SECRET
      }
    })
    try {
      await waitForRelayLog(relay, /^Relay is reachable by Infisical$/)
      const token = requestsTo(await cp.requests(), "/api/v1/relays/register-org-relay").at(-1)!.headers["authorization"]!.slice(7)
      const logs = relay.logs.text()
      expect(logs).not.toContain(CLIENT_SECRET)
      expect(logs).not.toContain(token)
    } finally {
      await relay.stop()
    }
  })

  it("organizationSlug is sent when INFISICAL_AUTH_ORGANIZATION_SLUG is set", async () => {
    const identity = await cp.cp((x) => x.createIdentity({ name: "relay-slug-id", jwt: JWTS["jwt-auth"] }))
    const first = (await cp.requests()).length
    const relay = await runRelay({
      controlPlane: cp,
      host: "relay-slug.test",
      flags: { name: "relay-slug", authMethod: "jwt-auth", machineIdentityId: identity.identityId, jwt: JWTS["jwt-auth"] },
      env: { INFISICAL_AUTH_ORGANIZATION_SLUG: "sub-org" }
    })
    try {
      await waitForRelayLog(relay, /^Successfully registered relay/)
      const [login] = requestsTo((await cp.requests()).slice(first), "/api/v1/auth/jwt-auth/login")
      expect(login!.rawBody).toBe(JSON.stringify({ identityId: identity.identityId, jwt: JWTS["jwt-auth"], organizationSlug: "sub-org" }))
    } finally {
      await relay.stop()
    }
  })
})
