/**
 * The relay's two control-plane loops under TestClock, with fake ControlPlane/Credentials:
 *
 * - heartbeat (protocol.md §6; checklist 41, 42): first ~10 s after start, every 10 s until one
 *   succeeds, then every 30 min whatever happens; each success logs `Relay is reachable by Infisical`;
 * - certificate renewal (checklist 39, 40): every `renewEvery`, early when the TLS certificate has
 *   less than a quarter of its lifetime left, and a failure logged (`Failed to renew certificates:
 *   ...`) and retried with capped jittered backoff for as long as it takes, never stopping the relay.
 */
import { it } from "@effect/vitest"
import { Duration, Effect, Layer, Option, Ref, Stream, TestClock } from "effect"
import { describe, expect } from "vitest"
import { ControlPlane, ControlPlaneError } from "../../src/controlplane/ControlPlane.ts"
import { type CredentialBundle, Credentials, CredentialsError } from "../../src/Credentials.ts"
import { HeartbeatLive } from "../../src/Heartbeat.ts"
import { defaultTimers, RelayConfig, type RelayConfigShape, RelayMode } from "../../src/RelayConfig.ts"
import { renewalDelay, RenewalLive } from "../../src/Renewal.ts"
import { LogCapture } from "./support.ts"

const config = (overrides: Partial<RelayConfigShape> = {}): RelayConfigShape => ({
  name: "relay-sched",
  mode: RelayMode.Instance({ host: "relay-sched.test", authSecret: undefined as never }),
  apiUrl: "http://127.0.0.1:1/api",
  statePath: "/nonexistent",
  customHeaders: [],
  listenHost: "127.0.0.1",
  sshPort: 0,
  tlsPort: 0,
  statusAddress: Option.none(),
  heartbeat: defaultTimers.heartbeat,
  renewEvery: defaultTimers.renewEvery,
  drainTimeout: defaultTimers.drainTimeout,
  ...overrides
})

const HOUR = 3_600_000
const MINUTE = 60_000

describe("heartbeat (§6)", () => {
  it.scoped("41 42: first after 10 s, every 10 s until a success, then every 30 min; failures never stop it", () => {
    const logs = new LogCapture()
    return Effect.gen(function* () {
      const calls = yield* Ref.make<Array<number>>([])
      // Fails 3 times, succeeds, then fails once in phase 2, then succeeds again.
      const outcomes = [false, false, false, true, false, true, true, true]
      const controlPlane = Layer.succeed(ControlPlane, {
        register: Effect.die("unused"),
        heartbeat: Effect.gen(function* () {
          const now = yield* TestClock.currentTimeMillis
          const n = (yield* Ref.getAndUpdate(calls, (c) => [...c, now])).length
          if (!outcomes[n]) {
            return yield* new ControlPlaneError({ operation: "heartbeat", status: 400, detail: "Relay relay-sched is not reachable" })
          }
        })
      })
      yield* Layer.build(HeartbeatLive.pipe(Layer.provide(controlPlane), Layer.provide(RelayConfig.layer(config()))))
      yield* TestClock.adjust("9 seconds")
      expect(yield* Ref.get(calls)).toEqual([])
      yield* TestClock.adjust("1 second")
      expect(yield* Ref.get(calls)).toEqual([10_000])
      yield* TestClock.adjust("30 seconds")
      expect(yield* Ref.get(calls)).toEqual([10_000, 20_000, 30_000, 40_000])
      expect(logs.messages().filter((m) => m === "Relay is reachable by Infisical")).toHaveLength(1)
      expect(logs.messages().filter((m) => m.startsWith("Heartbeat failed: "))).toEqual([
        "Heartbeat failed: heartbeat: 400 Relay relay-sched is not reachable",
        "Heartbeat failed: heartbeat: 400 Relay relay-sched is not reachable",
        "Heartbeat failed: heartbeat: 400 Relay relay-sched is not reachable"
      ])
      // Phase 2: every 30 minutes, no quicker retry after a failure.
      yield* TestClock.adjust(Duration.millis(30 * MINUTE - 1))
      expect(yield* Ref.get(calls)).toHaveLength(4)
      yield* TestClock.adjust("1 millis")
      yield* TestClock.adjust("90 minutes")
      expect(yield* Ref.get(calls)).toEqual([
        10_000, 20_000, 30_000, 40_000,
        40_000 + 30 * MINUTE, 40_000 + 60 * MINUTE, 40_000 + 90 * MINUTE, 40_000 + 120 * MINUTE
      ])
      expect(logs.messages().filter((m) => m === "Relay is reachable by Infisical")).toHaveLength(4)
    }).pipe(Effect.provide(logs.layer))
  })
})

/** A bundle that only carries what Renewal looks at. */
const bundle = (notBefore: number, notAfter: number, serial: number) =>
  ({ tlsNotBefore: new Date(notBefore), tlsNotAfter: new Date(notAfter), receivedAt: new Date(notBefore), serial }) as unknown as
    & CredentialBundle
    & { serial: number }

/** Fake Credentials: `renew` consults `failing`; a success issues a 24 h certificate from now. */
const fakeCredentials = (initial: CredentialBundle & { serial: number }) =>
  Effect.gen(function* () {
    const current = yield* Ref.make(initial)
    const attempts = yield* Ref.make<Array<number>>([])
    const failing = yield* Ref.make(false)
    const layer = Layer.succeed(Credentials, {
      current: Ref.get(current),
      changes: Stream.empty,
      renew: Effect.gen(function* () {
        const now = yield* TestClock.currentTimeMillis
        yield* Ref.update(attempts, (a) => [...a, now])
        if (yield* Ref.get(failing)) {
          return yield* new ControlPlaneError({ operation: "register relay", detail: "Transport error (POST http://127.0.0.1:1/api/v1/relays/register-instance-relay)" })
        }
        const previous = yield* Ref.get(current)
        const next = bundle(now, now + 24 * HOUR, previous.serial + 1)
        yield* Ref.set(current, next)
        return next
      })
    })
    return { layer, current, attempts, failing }
  })

describe("certificate renewal", () => {
  it.scoped("39: every renewEvery (6 h by default), logged as upstream", () => {
    const logs = new LogCapture()
    return Effect.gen(function* () {
      const creds = yield* fakeCredentials(bundle(0, 24 * HOUR, 1))
      yield* Layer.build(RenewalLive.pipe(Layer.provide(creds.layer), Layer.provide(RelayConfig.layer(config()))))
      yield* TestClock.adjust(Duration.millis(6 * HOUR - 1))
      expect(yield* Ref.get(creds.attempts)).toEqual([])
      yield* TestClock.adjust("1 millis")
      yield* TestClock.adjust("12 hours")
      expect(yield* Ref.get(creds.attempts)).toEqual([6 * HOUR, 12 * HOUR, 18 * HOUR])
      expect((yield* Ref.get(creds.current)).serial).toBe(4)
      expect(logs.messages().filter((m) => /^(Renewing certificates\.\.\.|Certificates renewed successfully)$/.test(m))).toEqual([
        "Renewing certificates...", "Certificates renewed successfully",
        "Renewing certificates...", "Certificates renewed successfully",
        "Renewing certificates...", "Certificates renewed successfully"
      ])
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped("renews early when less than 25% of the TLS certificate's lifetime is left, but never in a tight loop", () =>
    Effect.gen(function* () {
      // A 24 h renewal period: the 24 h certificate would expire first, so renewal comes at 18 h.
      const creds = yield* fakeCredentials(bundle(0, 24 * HOUR, 1))
      yield* Layer.build(
        RenewalLive.pipe(Layer.provide(creds.layer), Layer.provide(RelayConfig.layer(config({ renewEvery: Duration.hours(24) }))))
      )
      yield* TestClock.adjust("18 hours")
      expect(yield* Ref.get(creds.attempts)).toEqual([18 * HOUR])
      // Pure computation: a certificate already in its last quarter waits the minimum gap (1 min).
      const now = 30 * HOUR
      expect(Duration.toMillis(renewalDelay(bundle(now - 23 * HOUR, now + HOUR, 1), Duration.hours(6), now))).toBe(MINUTE)
      expect(Duration.toMillis(renewalDelay(bundle(now, now + 24 * HOUR, 1), Duration.hours(6), now))).toBe(6 * HOUR)
      expect(Duration.toMillis(renewalDelay(bundle(now, now + 4 * HOUR, 1), Duration.hours(6), now))).toBe(3 * HOUR)
    }))

  it.scoped("40: a control plane down for 12 hours: every failure logged, retried with backoff capped at 5 min, never fatal", () => {
    const logs = new LogCapture()
    return Effect.gen(function* () {
      const creds = yield* fakeCredentials(bundle(0, 24 * HOUR, 1))
      yield* Ref.set(creds.failing, true)
      yield* Layer.build(RenewalLive.pipe(Layer.provide(creds.layer), Layer.provide(RelayConfig.layer(config()))))
      yield* TestClock.adjust("6 hours")
      yield* TestClock.adjust("12 hours")
      const attempts = yield* Ref.get(creds.attempts)
      expect(attempts[0]).toBe(6 * HOUR)
      const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
      // Exponential from ~1 s (jittered 0.8-1.2), doubling, capped at 5 min.
      gaps.slice(0, 5).forEach((gap, i) => {
        expect(gap).toBeGreaterThanOrEqual(0.8 * 1000 * 2 ** i)
        expect(gap).toBeLessThanOrEqual(1.2 * 1000 * 2 ** i)
      })
      // (Jittered delays are fractional milliseconds: compare with a 1 ms tolerance.)
      for (const gap of gaps) expect(gap).toBeLessThanOrEqual(5 * MINUTE + 1)
      expect(gaps.slice(-10).every((gap) => Math.abs(gap - 5 * MINUTE) < 1)).toBe(true)
      expect(attempts.length).toBeGreaterThan(140)
      const failures = logs.messages().filter((m) => m.startsWith("Failed to renew certificates: "))
      expect(failures).toHaveLength(attempts.length)
      expect(failures[0]).toBe(
        "Failed to renew certificates: register relay: Transport error (POST http://127.0.0.1:1/api/v1/relays/register-instance-relay)"
      )
      expect(logs.lines.find((l) => l.message.startsWith("Failed to renew"))?.level).toBe("ERROR")
      // The certificate in use never changed meanwhile.
      expect((yield* Ref.get(creds.current)).serial).toBe(1)

      // The control plane is back: the next retry succeeds, then the 6-hourly rhythm resumes.
      yield* Ref.set(creds.failing, false)
      yield* TestClock.adjust("5 minutes")
      const recovered = (yield* Ref.get(creds.attempts)).at(-1)!
      expect((yield* Ref.get(creds.current)).serial).toBe(2)
      expect(logs.messages().at(-1)).toBe("Certificates renewed successfully")
      yield* TestClock.adjust("6 hours")
      expect((yield* Ref.get(creds.attempts)).at(-1)).toBe(recovered + 6 * HOUR)
      expect((yield* Ref.get(creds.current)).serial).toBe(3)
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped("a bad bundle from the control plane is a failure like any other", () =>
    Effect.gen(function* () {
      const logs = new LogCapture()
      const attempts = yield* Ref.make(0)
      const layer = Layer.succeed(Credentials, {
        current: Effect.succeed(bundle(0, 24 * HOUR, 1)),
        changes: Stream.empty,
        renew: Ref.updateAndGet(attempts, (n) => n + 1).pipe(
          Effect.flatMap((n) =>
            n === 1 ? Effect.fail(new CredentialsError({ detail: "the SSH host private key does not match the host certificate" })) : Effect.succeed(bundle(0, 24 * HOUR, 2))
          )
        )
      })
      yield* Layer.build(RenewalLive.pipe(Layer.provide(layer), Layer.provide(RelayConfig.layer(config())))).pipe(
        Effect.provide(logs.layer)
      )
      yield* TestClock.adjust("6 hours")
      yield* TestClock.adjust("2 seconds")
      expect(yield* Ref.get(attempts)).toBe(2)
      expect(logs.messages()).toContain(
        "Failed to renew certificates: invalid relay credentials: the SSH host private key does not match the host certificate"
      )
    }))
})
