/**
 * Spans in memory: the real layer graph (`relayLayerWith`, a fake ControlPlane issuing real
 * certificates) under an in-memory span exporter records registration, heartbeat and renewal
 * spans with their attributes, parented on nothing the test made up.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { NodeContext } from "@effect/platform-node"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Duration, Effect, Layer, Metric, Option, Redacted, Schema, TestClock } from "effect"
import { heartbeatLastSuccess, heartbeats, renewalLastSuccess, renewals } from "../../src/observability/ControlPlaneMetrics.ts"
import { describe, expect, it } from "@effect/vitest"
import { RelayCredentialsResponse } from "../../src/controlplane/Api.ts"
import { ControlPlane } from "../../src/controlplane/ControlPlane.ts"
import { CredentialsLive } from "../../src/Credentials.ts"
import { HeartbeatLive } from "../../src/Heartbeat.ts"
import { defaultTimers, RelayConfig, RelayMode } from "../../src/RelayConfig.ts"
import { RenewalLive } from "../../src/Renewal.ts"
import { makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import { DevControlPlane } from "../../src/dev/DevControlPlane.ts"
import { relayServerCredentials } from "../../src/dev/relays.ts"

const exporter = new InMemorySpanExporter()
const TracingTest = NodeSdk.layer(() => ({ resource: { serviceName: "spans-test" }, spanProcessor: new SimpleSpanProcessor(exporter) }))

describe("spans", () => {
  it.scoped("registration, heartbeat and renewal are traced and counted", () =>
    Effect.gen(function* () {
      const cp = yield* DevControlPlane
      // Minted up front, so registering under the TestClock involves no real-time work.
      const issue = Effect.flatMap(relayServerCredentials(cp.backend, { kind: "instance" }, "127.0.0.1"), Schema.decodeUnknown(RelayCredentialsResponse))
      const issued = [yield* Effect.orDie(issue), yield* Effect.orDie(issue)]
      const fake = Layer.succeed(ControlPlane, {
        register: Effect.suspend(() => Effect.succeed(issued.length > 1 ? issued.shift()! : issued[0]!)),
        heartbeat: Effect.void
      })
      const config = {
        name: "spans", mode: RelayMode.Instance({ host: "127.0.0.1", authSecret: Redacted.make("s") }), apiUrl: "http://127.0.0.1:1/api",
        statePath: "/nonexistent", customHeaders: [], listenHost: "127.0.0.1", sshPort: 0, tlsPort: 0, statusAddress: Option.none(),
        ...defaultTimers
      }
      yield* Layer.build(
        Layer.mergeAll(HeartbeatLive, RenewalLive).pipe(Layer.provide(CredentialsLive), Layer.provide(fake), Layer.provide(RelayConfig.layer(config)))
      )
      yield* TestClock.adjust(Duration.seconds(10))
      yield* TestClock.adjust(Duration.hours(6))
      const spans = exporter.getFinishedSpans()
      const names = spans.map((s) => s.name)
      expect(names).toContain("relay.register")
      expect(names).toContain("relay.heartbeat")
      expect(names).toContain("relay.renewCertificates")
      const register = spans.find((s) => s.name === "relay.register")!
      expect(register.attributes["relay.name"]).toBe("spans")
      expect(register.attributes["relay.mode"]).toBe("Instance")
      // Renewal re-registers inside its own span.
      const renewal = spans.find((s) => s.name === "relay.renewCertificates")!
      const nested = spans.filter((s) => s.name === "relay.register" && s.parentSpanContext?.spanId === renewal.spanContext().spanId)
      expect(nested.length).toBe(1)
      // The same events are counted for /metrics.
      const beats = yield* Metric.value(Metric.tagged(heartbeats, "outcome", "success"))
      const renewed = yield* Metric.value(Metric.tagged(renewals, "outcome", "success"))
      expect(beats.count).toBeGreaterThanOrEqual(1)
      expect(renewed.count).toBe(1)
      expect((yield* Metric.value(heartbeatLastSuccess)).value).toBeGreaterThan(0)
      expect((yield* Metric.value(renewalLastSuccess)).value).toBeGreaterThan(0)
    }).pipe(Effect.provide(Layer.mergeAll(TracingTest, DevControlPlane.layer({ authorities: makeAuthorities() }), NodeContext.layer))), { timeout: 60_000 })
})
