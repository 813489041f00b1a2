/**
 * Every relay mode end to end against the in-process Infisical control plane (real HTTP, the real
 * layer graph): it registers (or connects), both listeners serve the issued certificates (the
 * control plane's heartbeat probe is a verifying mTLS handshake with the relay host as servername),
 * and the heartbeat succeeds. The requests are checked byte for byte against protocol.md §2.
 *
 * Checklist: 44 45 46 47 48 49 50 51 58 59 (and 42).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { LoggedRequest } from "../../src/dev/ControlPlaneServer.ts"
import { verifySigV4 } from "./sigv4.ts"
import { type ControlPlaneHandle, requestsTo, runRelay, startControlPlane, waitForRelayLog } from "./support.ts"

const SECRET = "instance-secret-Zq81"
const AWS = { accessKeyId: "AKIDRELAYTEST0001", secretAccessKey: "aws-secret-Kx93/relay+test", sessionToken: "aws-session-token-77" }
const CUSTOM_HEADERS = `X-Relay-Test=one X-Quoted="two words" X-Single='three'`
const EXPECTED_CUSTOM = { "x-relay-test": "one", "x-quoted": "two words", "x-single": "three" }

const savedEnv = { ...process.env }
let cp: ControlPlaneHandle
const awsAttempts: Array<{ relayId: string; headers: Record<string, string>; body: string; method: string }> = []

beforeAll(async () => {
  // The AWS SDK's default chain reads the process environment; keep it hermetic.
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: AWS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: AWS.secretAccessKey,
    AWS_SESSION_TOKEN: AWS.sessionToken,
    AWS_REGION: "eu-west-3",
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/nonexistent/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials"
  })
  cp = await startControlPlane({
    relayAuthSecret: SECRET,
    verifyRelayAwsLogin: (attempt) => {
      const headers = JSON.parse(Buffer.from(attempt.iamRequestHeaders, "base64").toString("utf8")) as Record<string, string>
      const body = Buffer.from(attempt.iamRequestBody, "base64").toString("utf8")
      awsAttempts.push({ relayId: attempt.relay.id, headers, body, method: attempt.iamHttpRequestMethod })
      const check = verifySigV4(headers, body, AWS.secretAccessKey)
      return check.ok ? { ok: true } : { ok: false, message: `STS verification failed: ${check.reason}` }
    }
  })
})

afterAll(async () => {
  await cp?.close()
  for (const key of Object.keys(process.env)) if (!(key in savedEnv)) delete process.env[key]
  Object.assign(process.env, savedEnv)
})

/** Every request the relay sent carries User-Agent cli and the custom headers, under /api once. */
const expectRelayHeaders = (requests: ReadonlyArray<LoggedRequest>) => {
  expect(requests.length).toBeGreaterThan(0)
  for (const r of requests) {
    expect(r.path.startsWith("/api/v")).toBe(true)
    expect(r.path.startsWith("/api/api")).toBe(false)
    expect(r.headers["user-agent"]).toBe("cli")
    expect(r.headers).toMatchObject(EXPECTED_CUSTOM)
  }
}

const since = async (index: number) => (await cp.requests()).slice(index)

describe("instance relay (§2.1, §2.3)", () => {
  it("44 45 50 51: registers with the shared secret, serves the certificates, heartbeats", async () => {
    const first = (await cp.requests()).length
    const relay = await runRelay({
      controlPlane: cp,
      host: "relay-instance.test",
      // A domain with a trailing /api/ gets /api exactly once.
      flags: { name: "relay-instance", type: "instance", domain: `${cp.url}/api/` },
      env: { INFISICAL_RELAY_AUTH_SECRET: SECRET, INFISICAL_CUSTOM_HEADERS: CUSTOM_HEADERS }
    })
    try {
      await waitForRelayLog(relay, /^Relay is reachable by Infisical$/)
      const sent = await since(first)
      expectRelayHeaders(sent)
      const [register] = requestsTo(sent, "/register-instance-relay")
      expect(register).toMatchObject({ method: "POST", path: "/api/v1/relays/register-instance-relay" })
      expect(register!.headers["authorization"]).toBe(`Bearer ${SECRET}`)
      expect(register!.headers["content-type"]).toMatch(/^application\/json/)
      expect(register!.rawBody).toBe(JSON.stringify({ host: "relay-instance.test", name: "relay-instance" }))
      const [beat] = requestsTo(sent, "/heartbeat-instance-relay")
      expect(beat!.path).toBe("/api/v1/relays/heartbeat-instance-relay")
      expect(beat!.headers["authorization"]).toBe(`Bearer ${SECRET}`)
      expect(beat!.rawBody).toBe(JSON.stringify({ name: "relay-instance" }))
      const row = (await cp.cp((c) => c.relays)).find((r) => r.name === "relay-instance")
      expect(row?.heartbeat).not.toBeNull()
      expect(relay.logs.messages()).toContain("Successfully registered relay and received certificates from API")
    } finally {
      await relay.stop()
    }
  })
})

describe("legacy org relay with a token (§2.2)", () => {
  it("46: register-org-relay and heartbeat-org-relay with the identity token as bearer", async () => {
    const identity = await cp.cp((c) => c.createIdentity({ name: "org-token-identity" }))
    const grant = await cp.cp((c) => c.issueAccessToken(identity.identityId))
    const first = (await cp.requests()).length
    const relay = await runRelay({
      controlPlane: cp,
      host: "relay-orgtoken.test",
      flags: { name: "relay-orgtoken" },
      env: { INFISICAL_TOKEN: grant.accessToken, INFISICAL_CUSTOM_HEADERS: CUSTOM_HEADERS }
    })
    try {
      await waitForRelayLog(relay, /^Relay is reachable by Infisical$/)
      const sent = await since(first)
      expectRelayHeaders(sent)
      expect(sent.map((r) => r.path)).toEqual(
        expect.arrayContaining(["/api/v1/relays/register-org-relay", "/api/v1/relays/heartbeat-org-relay"])
      )
      for (const r of sent) expect(r.headers["authorization"]).toBe(`Bearer ${grant.accessToken}`)
      expect(requestsTo(sent, "/register-org-relay")[0]!.rawBody).toBe(
        JSON.stringify({ host: "relay-orgtoken.test", name: "relay-orgtoken" })
      )
      expect(requestsTo(sent, "/heartbeat-org-relay")[0]!.rawBody).toBe(JSON.stringify({ name: "relay-orgtoken" }))
      const row = (await cp.cp((c) => c.relays)).find((r) => r.name === "relay-orgtoken")
      expect(row).toMatchObject({ identityId: identity.identityId })
      expect(row?.heartbeat).not.toBeNull()
    } finally {
      await relay.stop()
    }
  })
})

describe("v2 relay enrolled with a token (§1.1 step 7, §2.5)", () => {
  it("47 48 58 59: enrolls once, connects with the relay JWT, reuses the stored token, re-enrolls for a new one", async () => {
    const created = await cp.cp((c) => c.createRelay({ name: "relay-v2tok", host: "relay-v2tok.test", authMethod: { method: "token" } }))
    const { token } = await cp.cp((c) => c.generateEnrollmentToken(created.id))
    const first = (await cp.requests()).length
    const relay = await runRelay({
      controlPlane: cp,
      tlsHost: "relay-v2tok.test",
      // --host is ignored for enrolled relays: the certificate is for the stored host.
      flags: { name: "relay-v2tok", enrollMethod: "token", token, host: "ignored.example" },
      env: { INFISICAL_CUSTOM_HEADERS: CUSTOM_HEADERS }
    })
    const statePath = path.join(relay.dir, "state", "relay-v2tok.conf")
    let accessToken = ""
    try {
      await waitForRelayLog(relay, /^Relay is reachable by Infisical$/)
      const sent = await since(first)
      expectRelayHeaders(sent)
      const [login] = requestsTo(sent, "/v2/relays/login")
      expect(login!.rawBody).toBe(JSON.stringify({ method: "token", token }))
      expect(login!.headers["authorization"]).toBeUndefined()
      const state = fs.readFileSync(statePath, "utf8")
      accessToken = /^INFISICAL_RELAY_ACCESS_TOKEN=(.+)$/m.exec(state)![1]!
      expect(state).toBe(
        `INFISICAL_RELAY_ACCESS_TOKEN=${accessToken}\nINFISICAL_RELAY_ENROLLMENT_TOKEN=${token}\nINFISICAL_RELAY_DOMAIN=${cp.apiUrl}\n`
      )
      expect(fs.statSync(statePath).mode & 0o777).toBe(0o600)
      expect(fs.statSync(path.dirname(statePath)).mode & 0o777).toBe(0o700)
      for (const p of ["/v2/relays/connect", "/v2/relays/heartbeat"]) {
        const [r] = requestsTo(sent, p)
        expect(r!.path).toBe(`/api${p}`)
        expect(r!.headers["authorization"]).toBe(`Bearer ${accessToken}`)
        expect(r!.rawBody).toBe("")
      }
      expect(relay.logs.messages()).toEqual(expect.arrayContaining([
        "Enrolling relay with enrollment token...",
        `Relay enrolled successfully. Access token saved to ${statePath}`,
        "Starting relay...",
        "Successfully connected relay and received certificates via v2 API"
      ]))
      expect((await cp.cp((c) => c.relays)).find((r) => r.name === "relay-v2tok")?.heartbeat).not.toBeNull()
    } finally {
      await relay.stop()
    }

    // The same token again: the stored access token, no login call (58).
    const second = (await cp.requests()).length
    const again = await runRelay({
      controlPlane: cp,
      tlsHost: "relay-v2tok.test",
      dir: relay.dir,
      flags: { name: "relay-v2tok", enrollMethod: "token", token }
    })
    try {
      await waitForRelayLog(again, /^Relay is reachable by Infisical$/)
      const sent = await since(second)
      expect(requestsTo(sent, "/v2/relays/login")).toHaveLength(0)
      expect(requestsTo(sent, "/v2/relays/connect")[0]!.headers["authorization"]).toBe(`Bearer ${accessToken}`)
      expect(again.logs.messages()).toContain("Enrollment token matches stored token. Using stored access token...")
    } finally {
      await again.stop()
    }

    // INFISICAL_RELAY_ACCESS_TOKEN overrides the stored token (59): a bogus one is refused by the backend.
    const overridden = await runRelay({
      controlPlane: cp,
      tlsHost: "relay-v2tok.test",
      dir: relay.dir,
      flags: { name: "relay-v2tok", enrollMethod: "token" },
      env: { INFISICAL_RELAY_ACCESS_TOKEN: "not-a-jwt" }
    })
    const failed = await overridden.exit
    expect(failed._tag).toBe("Failure")
    const third = await cp.requests()
    expect(requestsTo(third, "/v2/relays/connect").at(-1)!.headers["authorization"]).toBe("Bearer not-a-jwt")

    // A new enrollment token: a new login, and the new access token replaces the old one.
    const { token: token2 } = await cp.cp((c) => c.generateEnrollmentToken(created.id))
    const fourth = (await cp.requests()).length
    const renewed = await runRelay({
      controlPlane: cp,
      tlsHost: "relay-v2tok.test",
      dir: relay.dir,
      flags: { name: "relay-v2tok", enrollMethod: "token", token: token2 }
    })
    try {
      await waitForRelayLog(renewed, /^Relay is reachable by Infisical$/)
      const sent = await since(fourth)
      expect(requestsTo(sent, "/v2/relays/login")[0]!.rawBody).toBe(JSON.stringify({ method: "token", token: token2 }))
      const state = fs.readFileSync(statePath, "utf8")
      expect(state).toContain(`INFISICAL_RELAY_ENROLLMENT_TOKEN=${token2}\n`)
      expect(state).not.toContain(accessToken)
      expect(state.match(/INFISICAL_RELAY_ACCESS_TOKEN=/g)).toHaveLength(1)
    } finally {
      await renewed.stop()
    }
  })
})

describe("v2 relay with AWS auth (§1.1 step 6, §2.5)", () => {
  it("49: a SigV4-signed GetCallerIdentity, the relay id and domain saved, then connect and heartbeat", async () => {
    const created = await cp.cp((c) =>
      c.createRelay({
        name: "relay-v2aws",
        host: "relay-v2aws.test",
        authMethod: { method: "aws", stsEndpoint: "https://sts.amazonaws.com/", allowedPrincipalArns: "", allowedAccountIds: "123456789012" }
      })
    )
    const first = (await cp.requests()).length
    const relay = await runRelay({
      controlPlane: cp,
      tlsHost: "relay-v2aws.test",
      flags: { name: "relay-v2aws", enrollMethod: "aws", relayId: created.id },
      env: { INFISICAL_CUSTOM_HEADERS: CUSTOM_HEADERS }
    })
    try {
      await waitForRelayLog(relay, /^Relay is reachable by Infisical$/)
      const sent = await since(first)
      expectRelayHeaders(sent)
      const [login] = requestsTo(sent, "/v2/relays/login")
      const body = login!.body as Record<string, string>
      expect(Object.keys(body)).toEqual(["method", "relayId", "iamHttpRequestMethod", "iamRequestBody", "iamRequestHeaders"])
      expect(body).toMatchObject({ method: "aws", relayId: created.id, iamHttpRequestMethod: "POST" })
      expect(Buffer.from(body["iamRequestBody"]!, "base64").toString()).toBe("Action=GetCallerIdentity&Version=2011-06-15")
      const headers = JSON.parse(Buffer.from(body["iamRequestHeaders"]!, "base64").toString()) as Record<string, string>
      // Every signed header under Go's canonical names, sorted, plus Host; no Content-Length.
      expect(Object.keys(headers)).toEqual(["Authorization", "Content-Type", "Host", "X-Amz-Date", "X-Amz-Security-Token"])
      expect(headers).toMatchObject({
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        Host: "sts.eu-west-3.amazonaws.com",
        "X-Amz-Security-Token": AWS.sessionToken
      })
      const check = verifySigV4(headers, "Action=GetCallerIdentity&Version=2011-06-15", AWS.secretAccessKey)
      expect(check).toMatchObject({ ok: true, accessKeyId: AWS.accessKeyId, region: "eu-west-3" })
      expect(check.signedHeaders).toEqual(["content-length", "content-type", "host", "x-amz-date", "x-amz-security-token"])
      expect(awsAttempts.at(-1)).toMatchObject({ relayId: created.id, method: "POST" })

      const statePath = path.join(relay.dir, "state", "relay-v2aws.conf")
      expect(fs.readFileSync(statePath, "utf8")).toBe(`INFISICAL_RELAY_ID=${created.id}\nINFISICAL_RELAY_DOMAIN=${cp.apiUrl}\n`)
      const messages = relay.logs.messages()
      expect(messages).toEqual(expect.arrayContaining([
        "Authenticating relay via AWS Auth (STS GetCallerIdentity)...",
        `Relay authenticated via AWS Auth. State saved to ${statePath}`,
        "Starting relay..."
      ]))
      expect(messages.indexOf("Authenticating relay via AWS Auth (STS GetCallerIdentity)...")).toBeLessThan(
        messages.indexOf("Successfully connected relay and received certificates via v2 API")
      )
      const [connect] = requestsTo(sent, "/v2/relays/connect")
      expect(connect!.headers["authorization"]).toMatch(/^Bearer ey/)
      expect((await cp.cp((c) => c.relays)).find((r) => r.name === "relay-v2aws")?.heartbeat).not.toBeNull()
      // Secrets of the AWS chain never reach the logs.
      expect(relay.logs.text()).not.toContain(AWS.secretAccessKey)
      expect(relay.logs.text()).not.toContain(AWS.sessionToken)
    } finally {
      await relay.stop()
    }
  })

  it("a refused AWS login fails startup with upstream's message", async () => {
    const created = await cp.cp((c) =>
      c.createRelay({
        name: "relay-v2aws-bad",
        host: "relay-v2aws-bad.test",
        authMethod: { method: "aws", stsEndpoint: "https://sts.amazonaws.com/", allowedPrincipalArns: "", allowedAccountIds: "1" }
      })
    )
    const saved = process.env["AWS_SECRET_ACCESS_KEY"]
    process.env["AWS_SECRET_ACCESS_KEY"] = "a-different-secret"
    try {
      const relay = await runRelay({
        controlPlane: cp,
        flags: { name: "relay-v2aws-bad", enrollMethod: "aws", relayId: created.id }
      })
      const exit = await relay.exit
      expect(exit._tag).toBe("Failure")
      const text = JSON.stringify(exit)
      expect(text).toContain("AWS Auth login failed")
      expect(text).toContain("STS verification failed: signature mismatch")
      expect(text).not.toContain("a-different-secret")
    } finally {
      process.env["AWS_SECRET_ACCESS_KEY"] = saved
    }
  })
})
