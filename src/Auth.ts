/**
 * Auth: the bearer token for control-plane calls, per mode (protocol.md §1.1 steps 6-9, §2.6, §7):
 *
 * - instance relay: the shared secret, verbatim;
 * - legacy org relay with a token (`--token`/`INFISICAL_TOKEN`/...): that token, never refreshed;
 * - legacy org relay with `--auth-method`: a machine-identity login (every method of §7), kept
 *   fresh by a supervised fiber with the SDK's renew-or-relogin policy (src/auth/tokenRefresher.ts);
 * - v2 token enrollment: the stored relay access token, or a new one for a new enrollment token;
 * - v2 AWS enrollment: a fresh STS-signed login at every start.
 *
 * `bearer` is read per request, so a refreshed token is used from the next request on.
 * Failures to obtain a token at startup are StartupErrors in upstream's printout shape
 * (`error: <cause>` then upstream's context line). Secrets stay Redacted throughout.
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import type * as Path from "@effect/platform/Path"
import { Context, Effect, Layer, Redacted, Schema, Stream } from "effect"
import { StartupError } from "./cli/resolveStartConfig.ts"
import { apiClientFor } from "./controlplane/ApiClient.ts"
import { makeIdentityAuthClient } from "./auth/identityLogin.ts"
import { loginWithAws, loginWithEnrollmentToken } from "./auth/relayLogin.ts"
import { makeRefreshingToken } from "./auth/tokenRefresher.ts"
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
  /** Every token swapped in after the first (machine-identity renewals and re-logins). */
  readonly changes: Stream.Stream<Redacted.Redacted<string>>
}

export class Auth extends Context.Tag("relay/Auth")<Auth, AuthShape>() {
  static readonly static = (token: Redacted.Redacted<string>) =>
    Layer.succeed(Auth, { bearer: Effect.succeed(token), changes: Stream.empty })
}

const fixed = (token: Redacted.Redacted<string>): AuthShape => ({ bearer: Effect.succeed(token), changes: Stream.empty })

const startupFailure = (context: string) => (e: { readonly message: string }) =>
  new StartupError({ error: e.message, messages: [context] })

export const AuthLive: Layer.Layer<
  Auth,
  StartupError,
  RelayConfig | HttpClient.HttpClient | FileSystem.FileSystem | Path.Path
> = Layer.scoped(
  Auth,
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const http = yield* HttpClient.HttpClient
    const api = apiClientFor(http, config.apiUrl, config.customHeaders)
    const mode = config.mode
    switch (mode._tag) {
      case "Instance":
        return fixed(mode.authSecret)
      case "OrgToken":
        return fixed(mode.accessToken)
      case "OrgIdentity": {
        const client = yield* makeIdentityAuthClient({
          apiUrl: config.apiUrl,
          customHeaders: config.customHeaders,
          credentials: mode.credentials
        })
        const token = yield* makeRefreshingToken(client).pipe(
          Effect.mapError(startupFailure("unable to get infisical client"))
        )
        return { bearer: token.current, changes: token.changes }
      }
      case "EnrolledToken": {
        const credential = mode.credential
        if (credential._tag === "Stored") {
          yield* Effect.logInfo(
            credential.enrollmentTokenMatched
              ? "Enrollment token matches stored token. Using stored access token..."
              : "Using stored access token..."
          )
          yield* Effect.logInfo("Starting relay...")
          return fixed(credential.accessToken)
        }
        yield* Effect.logInfo("Enrolling relay with enrollment token...")
        const login = yield* loginWithEnrollmentToken(api, credential.enrollmentToken).pipe(
          Effect.mapError(startupFailure("enrollment failed"))
        )
        yield* writeRelayState(config.statePath, [
          [StateKeys.accessToken, Redacted.value(login.accessToken)],
          [StateKeys.enrollmentToken, Redacted.value(credential.enrollmentToken)],
          [StateKeys.domain, config.apiUrl]
        ]).pipe(Effect.mapError(startupFailure("failed to save relay access token")))
        yield* Effect.logInfo(`Relay enrolled successfully. Access token saved to ${config.statePath}`)
        yield* Effect.logInfo("Starting relay...")
        return fixed(login.accessToken)
      }
      case "EnrolledAws": {
        yield* Effect.logInfo("Authenticating relay via AWS Auth (STS GetCallerIdentity)...")
        const login = yield* loginWithAws(api, http, mode.relayId).pipe(
          Effect.mapError(startupFailure("AWS Auth login failed"))
        )
        // The relay JWT is not persisted: every start logs in afresh (and invalidates older tokens).
        yield* writeRelayState(config.statePath, [
          [StateKeys.relayId, mode.relayId],
          [StateKeys.domain, config.apiUrl]
        ]).pipe(Effect.mapError(startupFailure("failed to save relay id to config")))
        yield* Effect.logInfo(`Relay authenticated via AWS Auth. State saved to ${config.statePath}`)
        yield* Effect.logInfo("Starting relay...")
        return fixed(login.accessToken)
      }
    }
  })
)
