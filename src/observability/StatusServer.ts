/**
 * The status server on `--status-addr`: `/healthz` (the process is alive), `/readyz` (registered,
 * listeners bound, not draining: 200, else 503) and `/metrics` (Prometheus text). Off unless an
 * address is given; it binds before registration so a stuck start is visible.
 */
import { createServer } from "node:http"
import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import type { ListenAddress } from "../RelayConfig.ts"
import { PrometheusText, PrometheusTextLive } from "./Prometheus.ts"
import { Readiness } from "./Readiness.ts"
import { EventLoopMonitor } from "./RuntimeMetrics.ts"

const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export const statusRouter = Effect.gen(function* () {
  const readiness = yield* Readiness
  const prometheus = yield* PrometheusText
  const sampleEventLoop = yield* EventLoopMonitor
  return HttpRouter.empty.pipe(
    HttpRouter.get("/healthz", HttpServerResponse.text("ok\n")),
    HttpRouter.get(
      "/readyz",
      Effect.map(readiness.state, (state) => HttpServerResponse.text(`${state}\n`, { status: state === "ready" ? 200 : 503 }))
    ),
    HttpRouter.get(
      "/metrics",
      sampleEventLoop.pipe(
        Effect.zipRight(prometheus.scrape),
        Effect.map((body) => HttpServerResponse.text(body, { contentType: PROMETHEUS_CONTENT_TYPE }))
      )
    )
  )
})

/** The status app on whatever HttpServer is provided (tests use NodeHttpServer.layerTest). */
export const StatusAppLive = Layer.unwrapScoped(
  Effect.map(statusRouter, (router) => HttpServer.serve(router))
).pipe(Layer.provide(PrometheusTextLive))

export const StatusServerLive = (address: ListenAddress) =>
  StatusAppLive.pipe(
    HttpServer.withLogAddress,
    Layer.provide(NodeHttpServer.layer(createServer, { host: address.host, port: address.port }))
  )
