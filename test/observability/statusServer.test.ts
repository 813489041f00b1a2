/**
 * The status server: /healthz, /readyz following Readiness, /metrics in Prometheus text with the
 * relay's counters (and nothing of Effect's internals), served on a real loopback port.
 */
import { HttpClient } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import { sessionBytes, sessionsTotal, tagged } from "../../src/observability/Metrics.ts"
import { Readiness } from "../../src/observability/Readiness.ts"
import { StatusAppLive } from "../../src/observability/StatusServer.ts"

const get = (path: string) =>
  Effect.flatMap(HttpClient.HttpClient, (client) => client.get(path)).pipe(
    Effect.flatMap((res) => Effect.map(res.text, (body) => ({ status: res.status, body, type: res.headers["content-type"] }))),
    Effect.scoped
  )

const TestLayer = StatusAppLive.pipe(Layer.provideMerge(Readiness.layer), Layer.provideMerge(NodeHttpServer.layerTest))

describe("status server", () => {
  it.live("healthz is 200; readyz is 503 while starting, 200 when ready, 503 when draining", () =>
    Effect.gen(function* () {
      const readiness = yield* Readiness
      expect(yield* get("/healthz")).toMatchObject({ status: 200, body: "ok\n" })
      expect(yield* get("/readyz")).toMatchObject({ status: 503, body: "starting\n" })
      yield* readiness.markReady
      expect(yield* get("/readyz")).toMatchObject({ status: 200, body: "ready\n" })
      yield* readiness.markDraining
      expect(yield* get("/readyz")).toMatchObject({ status: 503, body: "draining\n" })
    }).pipe(Effect.provide(TestLayer)))

  it.live("metrics: Prometheus text with the relay's counters and tags, no Effect internals", () =>
    Effect.gen(function* () {
      yield* Metric.increment(sessionsTotal)
      yield* Metric.incrementBy(tagged(sessionBytes, "direction", "client_to_gateway"), 4096)
      const res = yield* get("/metrics")
      expect(res.status).toBe(200)
      expect(res.type).toContain("text/plain")
      expect(res.body).toMatch(/^# TYPE relay_sessions_total counter$/m)
      expect(res.body).toMatch(/^relay_sessions_total [1-9]\d*$/m)
      expect(res.body).toMatch(/^relay_session_bytes_total\{direction="client_to_gateway"\} \d+$/m)
      expect(res.body).toMatch(/^relay_event_loop_lag_seconds [\d.e-]+$/m)
      expect(res.body).not.toMatch(/effect_fiber/)
    }).pipe(Effect.provide(TestLayer)))
})
