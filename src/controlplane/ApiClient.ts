/**
 * The HTTP client every relay API call goes through, and the one place where HTTP failures become
 * ControlPlaneErrors carrying the status and the backend's message.
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { Effect, Schema } from "effect"
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

/** A client for the relay API: base URL, `User-Agent: cli`, custom headers, no retries (as upstream). */
export const makeApiClient = Effect.gen(function* () {
  const config = yield* RelayConfig
  const base = yield* HttpClient.HttpClient
  return base.pipe(
    HttpClient.mapRequest((request) =>
      request.pipe(
        HttpClientRequest.prependUrl(config.apiUrl),
        HttpClientRequest.setHeader("User-Agent", "cli"),
        HttpClientRequest.setHeaders(Object.fromEntries(config.customHeaders))
      )
    )
  )
})

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
      const body = yield* HttpClientResponse.schemaBodyJson(ApiErrorBody)(res).pipe(Effect.option)
      const message = body._tag === "Some" && body.value.message !== undefined
        ? String(body.value.message)
        : "request failed"
      return yield* new ControlPlaneError({ operation, status: res.status, detail: message })
    }
    return yield* HttpClientResponse.schemaBodyJson(response)(res)
  }).pipe(
    Effect.scoped,
    Effect.timeout("30 seconds"),
    Effect.catchTags({
      RequestError: (e) => new ControlPlaneError({ operation, detail: e.message }),
      ResponseError: (e) => new ControlPlaneError({ operation, detail: e.message }),
      ParseError: (e) => new ControlPlaneError({ operation, detail: `unexpected response: ${e.message}` }),
      TimeoutException: () => new ControlPlaneError({ operation, detail: "timed out after 30s" })
    })
  )

