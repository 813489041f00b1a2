/**
 * HTTP plumbing shared by the route modules: the caller (auth.ts) and the JSON body, read the way
 * upstream's fastify does it, and the 200 response.
 */
import { HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"
import { type Actor, type AuthMode, extractActor, requireActor } from "./auth.ts"
import type { Backend } from "./backend.ts"
import { type ApiError, internalError } from "./errors.ts"

const header = (request: HttpServerRequest.HttpServerRequest, name: string): string | undefined => {
  const value = request.headers[name]
  return typeof value === "string" ? value : undefined
}

export const authorizationHeader = Effect.map(HttpServerRequest.HttpServerRequest, (r) => header(r, "authorization"))

/** The verified caller, if any (a bad token fails even where no auth is required, as upstream). */
export const optionalActor = (be: Backend) =>
  Effect.flatMap(authorizationHeader, (authorization) => extractActor(be, authorization))

/** The caller, who must authenticate with one of `modes`. */
export const authenticate = <M extends AuthMode>(be: Backend, modes: ReadonlyArray<M>) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const actor: Actor | undefined = yield* extractActor(be, header(request, "authorization"))
    return yield* requireActor(actor, modes, request.url)
  })

/**
 * The JSON body. Fastify's own parser errors (empty body with a JSON content type, bad JSON, an
 * unknown content type) reach upstream's error handler as unknown errors: 500.
 */
export const jsonBody: Effect.Effect<unknown, ApiError, HttpServerRequest.HttpServerRequest> = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const text = yield* Effect.mapError(request.text, () => internalError())
  const contentType = (header(request, "content-type") ?? "").toLowerCase()
  if (text.length === 0) {
    return contentType.startsWith("application/json") ? yield* internalError() : undefined
  }
  if (contentType.startsWith("text/plain")) return text
  if (!contentType.startsWith("application/json")) return yield* internalError()
  return yield* Effect.try({ try: (): unknown => JSON.parse(text), catch: () => internalError() })
})

export const ok = (body: unknown) => HttpServerResponse.unsafeJson(body)

export const SUCCESSFULLY_TRIGGERED_HEARTBEAT = { message: "Successfully triggered heartbeat" } as const
