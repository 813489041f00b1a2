/**
 * ControlPlane: the relay's calls to the Infisical API (protocol.md §2.6), one implementation per
 * mode behind one interface: register (start and renewal) and heartbeat.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Context, Effect, Layer, Redacted, Schema } from "effect"
import { Auth } from "../Auth.ts"
import { RelayConfig, registeredHost } from "../RelayConfig.ts"
import { HeartbeatRequest, RegisterRequest, RelayCredentialsResponse } from "./Api.ts"
import { callApi, ControlPlaneError, makeApiClient } from "./ApiClient.ts"

export { ControlPlaneError }

export interface ControlPlaneShape {
  /** Register (v1) or connect (v2) and receive the relay's certificates. */
  readonly register: Effect.Effect<RelayCredentialsResponse, ControlPlaneError>
  /** Ask the control plane to probe this relay's TLS port. */
  readonly heartbeat: Effect.Effect<void, ControlPlaneError>
}

export class ControlPlane extends Context.Tag("relay/ControlPlane")<ControlPlane, ControlPlaneShape>() {}

const Success = Schema.Unknown

export const ControlPlaneLive = Layer.effect(
  ControlPlane,
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const auth = yield* Auth
    const client = yield* makeApiClient
    const authorized = (request: HttpClientRequest.HttpClientRequest, operation: string) =>
      auth.bearer.pipe(
        Effect.mapError((e) => new ControlPlaneError({ operation, detail: String(e) })),
        Effect.map((token) => HttpClientRequest.bearerToken(request, Redacted.value(token)))
      )
    const post = <A, I>(
      operation: string,
      path: string,
      body: { schema: Schema.Schema<any, any>; value: unknown } | undefined,
      response: Schema.Schema<A, I>
    ) =>
      Effect.gen(function* () {
        let request = HttpClientRequest.post(path)
        if (body) {
          request = yield* HttpClientRequest.schemaBodyJson(body.schema)(request, body.value).pipe(
            Effect.mapError((e) => new ControlPlaneError({ operation, detail: String(e) }))
          )
        }
        return yield* callApi(client, operation, yield* authorized(request, operation), response)
      })

    const host = registeredHost(config.mode) ?? ""
    const v1 = (kind: "instance" | "org"): ControlPlaneShape => ({
      register: post(
        "register relay",
        `/v1/relays/register-${kind}-relay`,
        { schema: RegisterRequest, value: { host, name: config.name } },
        RelayCredentialsResponse
      ),
      heartbeat: post(
        "heartbeat",
        `/v1/relays/heartbeat-${kind}-relay`,
        { schema: HeartbeatRequest, value: { name: config.name } },
        Success
      ).pipe(Effect.asVoid)
    })
    const v2: ControlPlaneShape = {
      register: post("connect relay", "/v2/relays/connect", undefined, RelayCredentialsResponse),
      heartbeat: post("heartbeat", "/v2/relays/heartbeat", undefined, Success).pipe(Effect.asVoid)
    }
    switch (config.mode._tag) {
      case "Instance":
        return v1("instance")
      case "OrgToken":
      case "OrgIdentity":
        return v1("org")
      case "EnrolledToken":
      case "EnrolledAws":
        return v2
    }
  })
)
