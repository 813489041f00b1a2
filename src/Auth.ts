/**
 * Auth: the bearer token for control-plane calls, per mode (protocol.md §2.6): the instance
 * secret, a machine-identity token, or the v2 relay access token (enrolling first if needed).
 */
import { FileSystem, HttpClientRequest, Path, type HttpClient } from "@effect/platform"
import { Context, Effect, Layer, Redacted, Schema } from "effect"
import { callApi, makeApiClient } from "./controlplane/ApiClient.ts"
import { RelayLoginRequest, RelayLoginResponse } from "./controlplane/Api.ts"
import { RelayConfig } from "./RelayConfig.ts"
import { StateKeys, writeRelayState } from "./state/RelayStateFile.ts"

export class AuthError extends Schema.TaggedError<AuthError>()("AuthError", {
  error: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `${this.error}: ${this.detail}`
  }
}

export interface AuthShape {
  readonly bearer: Effect.Effect<Redacted.Redacted<string>, AuthError>
}

export class Auth extends Context.Tag("relay/Auth")<Auth, AuthShape>() {
  static readonly static = (token: Redacted.Redacted<string>) => Layer.succeed(Auth, { bearer: Effect.succeed(token) })
}

/** Exchange a one-time enrollment token for the relay access token and persist it (§1.1 step 7). */
const enrollWithToken = (client: HttpClient.HttpClient, enrollmentToken: Redacted.Redacted<string>) =>
  Effect.gen(function* () {
    const config = yield* RelayConfig
    yield* Effect.logInfo("Enrolling relay with enrollment token...")
    const request = yield* HttpClientRequest.schemaBodyJson(RelayLoginRequest)(
      HttpClientRequest.post("/v2/relays/login"),
      { method: "token", token: Redacted.value(enrollmentToken) }
    ).pipe(Effect.mapError((e) => new AuthError({ error: "enrollment failed", detail: String(e) })))
    const login = yield* callApi(client, "enrollment failed", request, RelayLoginResponse)
    yield* writeRelayState(config.statePath, [
      [StateKeys.accessToken, Redacted.value(login.accessToken)],
      [StateKeys.enrollmentToken, Redacted.value(enrollmentToken)],
      [StateKeys.domain, config.apiUrl]
    ])
    yield* Effect.logInfo(`Relay enrolled successfully. Access token saved to ${config.statePath}`)
    return login.accessToken
  }).pipe(
    Effect.mapError((e) => new AuthError({ error: "enrollment failed", detail: e.message }))
  )

export const AuthLive: Layer.Layer<
  Auth,
  AuthError,
  RelayConfig | HttpClient.HttpClient | FileSystem.FileSystem | Path.Path
> = Layer.effect(
  Auth,
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const mode = config.mode
    switch (mode._tag) {
      case "Instance":
        return { bearer: Effect.succeed(mode.authSecret) }
      case "OrgToken":
        return { bearer: Effect.succeed(mode.accessToken) }
      case "EnrolledToken": {
        const credential = mode.credential
        if (credential._tag === "Stored") {
          yield* Effect.logInfo(
            credential.enrollmentTokenMatched
              ? "Enrollment token matches stored token. Using stored access token..."
              : "Using stored access token..."
          )
          return { bearer: Effect.succeed(credential.accessToken) }
        }
        const token = yield* enrollWithToken(yield* makeApiClient, credential.enrollmentToken)
        return { bearer: Effect.succeed(token) }
      }
      case "OrgIdentity":
      case "EnrolledAws":
        return yield* new AuthError({
          error: "unable to get infisical client",
          detail: `${mode._tag === "EnrolledAws" ? "AWS enrollment" : `--auth-method=${mode.credentials._tag}`} is not available in this build yet`
        })
    }
  })
)
