/**
 * The status server on `--status-addr`: `/healthz` (the process is alive), `/readyz` (registered,
 * listeners bound, not draining: 200, else 503) and `/metrics` (Prometheus text). Off unless an
 * address is given; it binds before registration so a stuck start is visible.
 *
 * Deep imports, and Node's HTTP server layer loaded only when the server starts: the package
 * indexes of @effect/platform and @effect/platform-node load every module they hold (a relay
 * without a status server would pay for them; docs/benchmarks.md, "Memory").
 */
import { createServer } from "node:http"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
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
  Layer.unwrapEffect(
    Effect.promise(() => import("@effect/platform-node/NodeHttpServer")).pipe(
      Effect.map((NodeHttpServer) =>
        StatusAppLive.pipe(
          HttpServer.withLogAddress,
          Layer.provide(NodeHttpServer.layer(createServer, { host: address.host, port: address.port }))
        )
      )
    )
  )
