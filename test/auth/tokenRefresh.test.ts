/**
 * The machine-identity token lifecycle under TestClock (protocol.md §7), against the in-process
 * control plane whose token clock follows the TestClock:
 * renew before expiry (`POST /api/v1/auth/token/renew`, no Authorization header), re-login when
 * the max TTL would be exceeded, re-login when renewal fails, a failed re-login retried with
 * backoff, and every new token used by the next control-plane request.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { it } from "@effect/vitest"
import { Chunk, Context, Deferred, Duration, Effect, Fiber, Layer, Option, Redacted, Stream, TestClock } from "effect"
import { afterAll, beforeAll, describe, expect } from "vitest"
import { Auth, AuthLive } from "../../src/Auth.ts"
import { ControlPlane, ControlPlaneLive } from "../../src/controlplane/ControlPlane.ts"
import type { Identity } from "../../src/dev/store.ts"
import { MachineIdentityCredentials, RelayConfig, type RelayConfigShape, RelayMode } from "../../src/RelayConfig.ts"
import { type ControlPlaneHandle, LogCapture, requestsTo, startControlPlane } from "../controlplane/support.ts"

const BASE = Date.UTC(2026, 0, 1)
/** The control plane's token clock: BASE + the TestClock time the test has advanced to. */
let offsetMs = 0
let cp: ControlPlaneHandle

beforeAll(async () => {
  cp = await startControlPlane({ now: () => BASE + offsetMs })
})
afterAll(() => cp?.close())

const configFor = (clientId: string, clientSecret: string): RelayConfigShape => ({
  name: "relay-refresh",
  mode: RelayMode.OrgIdentity({
    host: "relay-refresh.test",
    credentials: MachineIdentityCredentials["universal-auth"]({ clientId, clientSecret: Redacted.make(clientSecret) })
  }),
  apiUrl: cp.apiUrl,
  statePath: "/nonexistent/relay-refresh.conf",
  customHeaders: [["X-Custom", "yes"]],
  listenHost: "127.0.0.1",
  sshPort: 0,
  tlsPort: 0,
  statusAddress: Option.none(),
  heartbeat: { firstAfter: Duration.seconds(10), retryEvery: Duration.seconds(10), every: Duration.minutes(30) },
  renewEvery: Duration.hours(6),
  drainTimeout: Duration.seconds(1)
})

/** Spin (yielding) until a sleep ends at a TestClock deadline accepted by `pred`. */
const untilSleep = (pred: (end: number) => boolean) =>
  Effect.gen(function* () {
    for (let i = 0; i < 100_000; i++) {
      if (Chunk.some(yield* TestClock.sleeps(), pred)) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage("the expected sleep was never scheduled")
  })

/** Advance both clocks to `toMs` once the refresher sleeps until `dueMs`, and wait for the next token. */
const advanceAndAwaitToken = (auth: Context.Tag.Service<Auth>, pred: (end: number) => boolean, toMs: number) =>
  Effect.gen(function* () {
    yield* untilSleep(pred)
    const next = yield* auth.changes.pipe(Stream.runHead, Effect.fork)
    yield* Effect.yieldNow()
    const now = yield* TestClock.currentTimeMillis
    offsetMs = toMs
    yield* TestClock.adjust(Duration.millis(toMs - now))
    return Option.getOrThrow(yield* Fiber.join(next))
  })

describe("machine-identity token renewal (SDK policy)", () => {
  it.scoped("renews, re-logs in at max TTL and after a failed renewal, retries a failed re-login, and the next request uses the new token", () => {
    const logs = new LogCapture()
    return Effect.gen(function* () {
      const secret = "refresh-client-secret-Uv12"
      const identity = yield* Effect.promise(() =>
        cp.cp((c) => c.createIdentity({ name: "refresh-id", clientSecret: secret, accessTokenTTL: 60, accessTokenMaxTTL: 150 }))
      )
      const store = (yield* Effect.promise(() => cp.cp((c) => Effect.succeed(c.backend)))).store
      const config = configFor(identity.clientId, secret)
      const platform = Layer.mergeAll(NodeHttpClient.layerUndici, NodeContext.layer)
      const context = yield* Layer.build(
        ControlPlaneLive.pipe(
          Layer.provideMerge(AuthLive),
          Layer.provide(RelayConfig.layer(config)),
          Layer.provide(platform)
        )
      )
      const auth = Context.get(context, Auth)
      const controlPlane = Context.get(context, ControlPlane)
      const mark = () => Effect.promise(() => cp.requests().then((r) => r.length))
      const since = (n: number) => Effect.promise(() => cp.requests().then((r) => r.slice(n)))

      const token1 = Redacted.value(yield* auth.bearer)
      const logins = requestsTo(yield* since(0), "/api/v1/auth/universal-auth/login")
      expect(logins).toHaveLength(1)
      expect(logins[0]!.rawBody).toBe(JSON.stringify({ clientId: identity.clientId, clientSecret: secret }))

      // 1. At expiresIn - 5 s (55 s): renewal, since 95 s of max TTL are left (>= 60 s).
      let n = yield* mark()
      const token2 = Redacted.value(yield* advanceAndAwaitToken(auth, (end) => end === 55_000, 55_000))
      expect(token2).not.toBe(token1)
      let sent = yield* since(n)
      expect(sent.map((r) => r.path)).toEqual(["/api/v1/auth/token/renew"])
      expect(sent[0]!.headers["authorization"]).toBeUndefined()
      expect(sent[0]!.headers["user-agent"]).toBe("cli")
      expect(sent[0]!.headers["x-custom"]).toBe("yes")
      expect(sent[0]!.rawBody).toBe(JSON.stringify({ accessToken: token1 }))
      expect(Redacted.value(yield* auth.bearer)).toBe(token2)

      // 2. At 110 s only 40 s of max TTL are left (< expiresIn): a fresh login instead of a renewal.
      n = yield* mark()
      const token3 = Redacted.value(yield* advanceAndAwaitToken(auth, (end) => end === 110_000, 110_000))
      sent = yield* since(n)
      expect(sent.map((r) => r.path)).toEqual(["/api/v1/auth/universal-auth/login"])
      expect(token3).not.toBe(token2)

      // 3. The token is revoked server-side: renewal fails (401), the relay logs in again.
      const revokeAll = () => {
        for (const record of store.accessTokens.values()) record.revoked = true
      }
      revokeAll()
      n = yield* mark()
      const token4 = Redacted.value(yield* advanceAndAwaitToken(auth, (end) => end === 165_000, 165_000))
      sent = yield* since(n)
      expect(sent.map((r) => [r.path, r.headers["authorization"]])).toEqual([
        ["/api/v1/auth/token/renew", undefined],
        ["/api/v1/auth/universal-auth/login", undefined]
      ])
      expect(logs.messages()).toContain(
        "Failed to renew access token: renew access token: 401 No identity access token found. Attempting to re-authenticate."
      )

      // 4. Renewal and re-login both fail: logged, retried with backoff (~1 s), then it works again.
      revokeAll()
      const original = store.identities.get(identity.identityId)!
      const changed: Identity = { ...original, clientSecret: "rotated-elsewhere" }
      store.identities.set(identity.identityId, changed)
      const failedRelogin = yield* Deferred.make<void>()
      const from = logs.lines.length
      yield* Effect.fork(Effect.promise(() => logs.waitFor(/^Failed to re-authenticate: /, 30_000, from)).pipe(
        Effect.zipRight(Deferred.succeed(failedRelogin, undefined))
      ))
      yield* untilSleep((end) => end === 220_000)
      offsetMs = 220_000
      yield* TestClock.adjust("55 seconds")
      yield* Deferred.await(failedRelogin)
      expect(logs.messages().find((m) => m.startsWith("Failed to re-authenticate: "))).toBe(
        "Failed to re-authenticate: universal-auth login: 401 Invalid credentials"
      )
      expect(Redacted.value(yield* auth.bearer)).toBe(token4)
      store.identities.set(identity.identityId, original)
      n = yield* mark()
      const token5 = Redacted.value(
        yield* advanceAndAwaitToken(auth, (end) => end >= 220_800 && end <= 221_200, 221_500)
      )
      expect(token5).not.toBe(token4)
      sent = yield* since(n)
      expect(sent.map((r) => r.path)).toEqual(["/api/v1/auth/universal-auth/login"])

      // 5. The next control-plane request carries the new token.
      n = yield* mark()
      yield* controlPlane.register
      sent = yield* since(n)
      expect(sent.map((r) => [r.path, r.headers["authorization"]])).toEqual([
        ["/api/v1/relays/register-org-relay", `Bearer ${token5}`]
      ])
      // Nothing secret was logged along the way.
      for (const value of [secret, token1, token2, token3, token4, token5]) expect(logs.text()).not.toContain(value)
    }).pipe(Effect.provide(logs.layer))
  }, 60_000)
})
