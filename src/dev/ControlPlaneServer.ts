/**
 * The dev control plane over HTTP: upstream's routes under `/api` on an Effect HttpRouter, every
 * request logged (store.requests) and every failure answered with upstream's error body
 * `{reqId, statusCode, message, error}`.
 *
 *   ControlPlaneServer.layer({ relayAuthSecret, host: "127.0.0.1", port: 0 })
 *     → DevControlPlane (programmatic API) + ControlPlaneEndpoint (bound URL)
 *   ControlPlaneServer.layerTest(options)
 *     → the same on NodeHttpServer.layerTest, plus an HttpClient relative to the server
 */
import { createServer } from "node:http"
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Context, Effect, Layer } from "effect"
import { DevControlPlane } from "./DevControlPlane.ts"
import { errorBody, newRequestId } from "./errors.ts"
import type { ControlPlaneOptions } from "./options.ts"
import { gatewayRoutes } from "./routes/gatewayRoutes.ts"
import { identityAuthRoutes } from "./routes/identityAuthRoutes.ts"
import { relayRoutes } from "./routes/relayRoutes.ts"

export { DevControlPlane } from "./DevControlPlane.ts"
export type { DevControlPlaneShape, IssuedRelayClient, IssueRelayClientInput } from "./DevControlPlane.ts"
export type { ControlPlaneOptions, IdentityLoginAttempt, RelayAwsLoginAttempt, VerifyResult } from "./options.ts"
export type { GatewayRegistration } from "./gateways.ts"
export type { AccessTokenGrant, CreateIdentityInput, IdentityCredentials } from "./identities.ts"
export type { LoggedRequest } from "./store.ts"
export { makeAuthorities } from "./authorities.ts"
export { ApiError } from "./errors.ts"

/** Where the control plane listens: `url` (`http://127.0.0.1:PORT`) and `apiUrl` (`url + /api`). */
export class ControlPlaneEndpoint extends Context.Tag("dev/ControlPlaneEndpoint")<
  ControlPlaneEndpoint,
  { readonly url: string; readonly apiUrl: string }
>() {
  static readonly fromServer = Layer.effect(
    ControlPlaneEndpoint,
    HttpServer.addressWith((address) => {
      if (address._tag === "UnixAddress") return Effect.succeed({ url: `http://unix:${address.path}`, apiUrl: "/api" })
      // A wildcard bind is reached on loopback.
      const host = address.hostname === "::" || address.hostname === "0.0.0.0" ? "127.0.0.1" : address.hostname
      const url = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`
      return Effect.succeed({ url, apiUrl: `${url}/api` })
    })
  )
}

/** upstream `GET /api/status`, trimmed to what a readiness check needs. */
const statusRoute = HttpRouter.get(
  "/api/status",
  Effect.sync(() => HttpServerResponse.unsafeJson({ date: new Date().toISOString(), message: "Ok" }))
)

export const router = HttpRouter.concatAll(relayRoutes, gatewayRoutes, identityAuthRoutes).pipe(statusRoute)

const headersRecord = (headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>) => {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name] = typeof value === "string" ? value : value.join(", ")
  }
  return out
}

const parseLogged = (text: string): unknown => {
  if (text.length === 0) return undefined
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/** Logs the request, then maps every failure to upstream's error body. */
export const app = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const cp = yield* DevControlPlane
  const reqId = newRequestId()
  // The body text is cached on the request, so the route reads it again for free.
  const rawBody = yield* Effect.orElseSucceed(request.text, () => "")
  const questionMark = request.url.indexOf("?")
  cp.backend.store.requests.push({
    reqId,
    at: new Date(),
    method: request.method,
    path: questionMark === -1 ? request.url : request.url.slice(0, questionMark),
    url: request.url,
    headers: headersRecord(request.headers),
    rawBody,
    body: parseLogged(rawBody)
  })
  return yield* router.pipe(
    Effect.catchTags({
      ApiError: (e) => Effect.succeed(HttpServerResponse.unsafeJson(errorBody(reqId, e), { status: e.statusCode })),
      // fastify's default not-found answer.
      RouteNotFound: () =>
        Effect.succeed(
          HttpServerResponse.unsafeJson(
            { message: `Route ${request.method}:${request.url} not found`, error: "Not Found", statusCode: 404 },
            { status: 404 }
          )
        )
    }),
    Effect.catchAllCause((cause) =>
      Effect.as(
        Effect.logError("dev control plane: unhandled failure", Cause.pretty(cause)),
        HttpServerResponse.unsafeJson(
          { reqId, statusCode: 500, error: "InternalServerError", message: "Something went wrong" },
          { status: 500 }
        )
      )
    )
  )
})

/** The HTTP app on whatever HttpServer is provided. */
export const ControlPlaneApp = HttpServer.serve(app)

export interface ServerOptions extends ControlPlaneOptions {
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Default 0 (a random free port; see ControlPlaneEndpoint). */
  readonly port?: number
}

const withState = (options: ControlPlaneOptions) =>
  Layer.mergeAll(ControlPlaneApp, ControlPlaneEndpoint.fromServer).pipe(
    Layer.provideMerge(DevControlPlane.layer(options))
  )

/** The control plane on a Node HTTP server bound to host:port. */
export const layer = ({ host = "127.0.0.1", port = 0, ...options }: ServerOptions = {}) =>
  withState(options).pipe(Layer.provide(NodeHttpServer.layer(() => createServer(), { host, port })))

/** The control plane on `NodeHttpServer.layerTest`, which also provides an HttpClient aimed at it. */
export const layerTest = (options: ControlPlaneOptions = {}) =>
  withState(options).pipe(Layer.provideMerge(NodeHttpServer.layerTest))
