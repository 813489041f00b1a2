/**
 * The HTTP client every relay API call goes through, and the one place where HTTP failures become
 * ControlPlaneErrors carrying the status and the backend's message.
 *
 * Error messages never carry request or response bodies: a body may hold a secret (a login's
 * access token, a private key), so a response that does not decode is reported as such, without
 * the value that failed.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { Effect, Schedule, Schema } from "effect"
import { RelayConfig } from "../RelayConfig.ts"
import { ApiErrorBody } from "./Api.ts"

export class ControlPlaneError extends Schema.TaggedError<ControlPlaneError>()("ControlPlaneError", {
  operation: Schema.String,
  status: Schema.optional(Schema.Number),
  detail: Schema.String
}) {
  override get message(): string {
    return this.status === undefined
      ? `${this.operation}: ${this.detail}`
      : `${this.operation}: ${this.status} ${this.detail}`
  }
}

/** The client shape every relay API call uses: base URL, `User-Agent: cli`, custom headers. */
export const apiClientFor = (
  base: HttpClient.HttpClient,
  apiUrl: string,
  customHeaders: ReadonlyArray<readonly [string, string]>
): HttpClient.HttpClient =>
  base.pipe(
    HttpClient.mapRequest((request) =>
      request.pipe(
        HttpClientRequest.prependUrl(apiUrl),
        HttpClientRequest.setHeader("User-Agent", "cli"),
        HttpClientRequest.setHeaders(Object.fromEntries(customHeaders))
      )
    )
  )

/** A client for the relay API: base URL, `User-Agent: cli`, custom headers, no retries (as upstream). */
export const makeApiClient = Effect.gen(function* () {
  const config = yield* RelayConfig
  const base = yield* HttpClient.HttpClient
  return apiClientFor(base, config.apiUrl, config.customHeaders)
})

/** The backend's `message`, when the body is upstream's error shape. */
const backendMessage = (res: HttpClientResponse.HttpClientResponse) =>
  HttpClientResponse.schemaBodyJson(ApiErrorBody)(res).pipe(
    Effect.option,
    Effect.map((body) =>
      body._tag === "Some" && body.value.message !== undefined
        ? typeof body.value.message === "string" ? body.value.message : JSON.stringify(body.value.message)
        : "request failed"
    )
  )

/** Run a request; non-2xx becomes a ControlPlaneError carrying the status and the backend's message. */
export const callApi = <A, I>(
  client: HttpClient.HttpClient,
  operation: string,
  request: HttpClientRequest.HttpClientRequest,
  response: Schema.Schema<A, I>
) =>
  Effect.gen(function* () {
    const res = yield* client.execute(request)
    if (res.status < 200 || res.status >= 300) {
      return yield* new ControlPlaneError({ operation, status: res.status, detail: yield* backendMessage(res) })
    }
    return yield* HttpClientResponse.schemaBodyJson(response)(res)
  }).pipe(
    Effect.scoped,
    Effect.timeout("30 seconds"),
    Effect.catchTags({
      RequestError: (e) => new ControlPlaneError({ operation, detail: e.message }),
      ResponseError: (e) => new ControlPlaneError({ operation, detail: `${e.reason}: ${e.description ?? "failed to read the response"}` }),
      // The value that failed to decode may be a secret: report only that it did not decode.
      ParseError: () => new ControlPlaneError({ operation, detail: "unexpected response body" }),
      TimeoutException: () => new ControlPlaneError({ operation, detail: "timed out after 30s" })
    })
  )

/** A POST with a JSON body (encoded with `schema`), decoded with `response`. */
export const postJson = <A, I, B, BI>(
  client: HttpClient.HttpClient,
  operation: string,
  path: string,
  schema: Schema.Schema<B, BI>,
  body: B,
  response: Schema.Schema<A, I>
) =>
  HttpClientRequest.schemaBodyJson(schema)(HttpClientRequest.post(path), body).pipe(
    Effect.mapError(() => new ControlPlaneError({ operation, detail: "could not encode the request body" })),
    Effect.flatMap((request) => callApi(client, operation, request, response))
  )

/**
 * The Infisical SDK's policy for its own login calls: network failures (no HTTP status) are retried
 * up to 3 times with jittered exponential backoff; an HTTP error is final.
 */
export const retryNetworkErrors = <A, R>(effect: Effect.Effect<A, ControlPlaneError, R>) =>
  Effect.retry(effect, {
    times: 3,
    schedule: Schedule.exponential("200 millis").pipe(Schedule.jittered),
    while: (e) => e.status === undefined && !e.detail.startsWith("unexpected response")
  })
