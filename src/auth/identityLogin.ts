/**
 * Machine-identity login for legacy org relays, every method of protocol.md §7, plus the token
 * renewal call. Bodies as the Infisical Go SDK sends them:
 *
 * | method          | endpoint                               | body                                        |
 * | --------------- | -------------------------------------- | ------------------------------------------- |
 * | universal-auth  | `/v1/auth/universal-auth/login`        | `{clientId, clientSecret}`                  |
 * | kubernetes      | `/v1/auth/kubernetes-auth/login`       | `{identityId, jwt}`                         |
 * | azure           | `/v1/auth/azure-auth/login`            | `{identityId, jwt}`                         |
 * | gcp-id-token    | `/v1/auth/gcp-auth/login`              | `{identityId, jwt}`                         |
 * | gcp-iam         | `/v1/auth/gcp-auth/login`              | `{identityId, jwt}`                         |
 * | aws-iam         | `/v1/auth/aws-auth/login`              | `{identityId, iamHttpRequestMethod, iamRequestBody, iamRequestHeaders}` |
 * | oidc-auth       | `/v1/auth/oidc-auth/login`             | `{identityId, jwt}`                         |
 * | jwt-auth        | `/v1/auth/jwt-auth/login`              | `{identityId, jwt}`                         |
 *
 * plus `organizationSlug` when `INFISICAL_AUTH_ORGANIZATION_SLUG` is set (the SDK's fallback; the
 * upstream CLI reads an `--organization-slug` flag that `relay start` lacks, which breaks every
 * `--auth-method` there: this implementation does not depend on that flag).
 *
 * Requests go to the relay's API base with `User-Agent: cli` and the custom headers, and network
 * failures are retried 3 times as the SDK does. Renewal is `POST /v1/auth/token/renew
 * {accessToken}` with no Authorization header.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import { Config, Data, Effect, Option, Redacted, type Schema } from "effect"
import {
  AwsIamLoginRequest,
  IdentityAccessTokenResponse,
  JwtLoginRequest,
  RenewAccessTokenRequest,
  UniversalAuthLoginRequest
} from "../controlplane/Api.ts"
import { apiClientFor, type ControlPlaneError, postJson, retryNetworkErrors } from "../controlplane/ApiClient.ts"
import type { MachineIdentityCredentials } from "../RelayConfig.ts"
import { signGetCallerIdentity } from "./awsSts.ts"
import {
  azureMetadataToken,
  cloudEndpoints,
  gcpIamSignedJwt,
  gcpMetadataIdentityToken,
  kubernetesServiceAccountToken
} from "./cloudCredentials.ts"

/** A login or renewal that did not produce a token; `detail` never holds a secret. */
export class IdentityLoginError extends Data.TaggedError("IdentityLoginError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

export interface IdentityAuthClient {
  /** Log in with the configured method (fetching its cloud credential first, where it has one). */
  readonly login: Effect.Effect<IdentityAccessTokenResponse, IdentityLoginError>
  /** `POST /v1/auth/token/renew`. */
  readonly renew: (accessToken: Redacted.Redacted<string>) => Effect.Effect<IdentityAccessTokenResponse, IdentityLoginError>
}

const loginPath = (method: MachineIdentityCredentials["_tag"]): string => {
  switch (method) {
    case "universal-auth":
      return "/v1/auth/universal-auth/login"
    case "kubernetes":
      return "/v1/auth/kubernetes-auth/login"
    case "azure":
      return "/v1/auth/azure-auth/login"
    case "gcp-id-token":
    case "gcp-iam":
      return "/v1/auth/gcp-auth/login"
    case "aws-iam":
      return "/v1/auth/aws-auth/login"
    case "oidc-auth":
      return "/v1/auth/oidc-auth/login"
    case "jwt-auth":
      return "/v1/auth/jwt-auth/login"
  }
}

const asLoginError = (e: { readonly message: string }) => new IdentityLoginError({ detail: e.message })

export const makeIdentityAuthClient = (options: {
  readonly apiUrl: string
  readonly customHeaders: ReadonlyArray<readonly [string, string]>
  readonly credentials: MachineIdentityCredentials
}) =>
  Effect.gen(function* () {
    const http = yield* HttpClient.HttpClient
    const fs = yield* FileSystem.FileSystem
    const endpoints = yield* cloudEndpoints
    const organizationSlug = yield* Config.string("INFISICAL_AUTH_ORGANIZATION_SLUG").pipe(
      Config.option,
      Effect.map(Option.filter((s) => s.trim() !== "")),
      Effect.orElseSucceed(() => Option.none<string>())
    )
    const slug = Option.match(organizationSlug, { onNone: () => ({}), onSome: (s) => ({ organizationSlug: s }) })
    const api = apiClientFor(http, options.apiUrl, options.customHeaders)
    const creds = options.credentials
    const operation = `${creds._tag} login`
    const post = <B, BI>(schema: Schema.Schema<B, BI>, body: B) =>
      retryNetworkErrors(postJson(api, operation, loginPath(creds._tag), schema, body, IdentityAccessTokenResponse)).pipe(
        Effect.mapError((e: ControlPlaneError) => asLoginError(e))
      )
    const withJwt = (identityId: string, jwt: Effect.Effect<Redacted.Redacted<string>, { readonly message: string }, HttpClient.HttpClient | FileSystem.FileSystem>) =>
      jwt.pipe(
        Effect.provideService(HttpClient.HttpClient, http),
        Effect.provideService(FileSystem.FileSystem, fs),
        Effect.mapError(asLoginError),
        Effect.flatMap((token) => post(JwtLoginRequest, { identityId, jwt: Redacted.value(token), ...slug }))
      )

    const login: Effect.Effect<IdentityAccessTokenResponse, IdentityLoginError> = Effect.suspend(() => {
      switch (creds._tag) {
        case "universal-auth":
          return post(UniversalAuthLoginRequest, {
            clientId: creds.clientId,
            clientSecret: Redacted.value(creds.clientSecret),
            ...slug
          })
        case "kubernetes":
          return withJwt(creds.identityId, kubernetesServiceAccountToken(creds.serviceAccountTokenPath))
        case "azure":
          return withJwt(creds.identityId, azureMetadataToken(endpoints))
        case "gcp-id-token":
          return withJwt(creds.identityId, gcpMetadataIdentityToken(endpoints, creds.identityId))
        case "gcp-iam":
          return withJwt(creds.identityId, gcpIamSignedJwt(endpoints, creds.identityId, creds.serviceAccountKeyFilePath))
        case "oidc-auth":
        case "jwt-auth":
          return withJwt(creds.identityId, Effect.succeed(creds.jwt))
        case "aws-iam":
          return signGetCallerIdentity({ includeContentLength: true }).pipe(
            Effect.provideService(HttpClient.HttpClient, http),
            Effect.mapError(asLoginError),
            Effect.flatMap((signed) =>
              post(AwsIamLoginRequest, {
                identityId: creds.identityId,
                iamHttpRequestMethod: signed.iamHttpRequestMethod,
                iamRequestBody: signed.iamRequestBody,
                iamRequestHeaders: signed.iamRequestHeaders,
                ...slug
              })
            )
          )
      }
    }).pipe(Effect.withSpan("Auth.identityLogin", { attributes: { "auth.method": creds._tag } }))

    const renew = (accessToken: Redacted.Redacted<string>) =>
      retryNetworkErrors(
        postJson(
          api,
          "renew access token",
          "/v1/auth/token/renew",
          RenewAccessTokenRequest,
          { accessToken: Redacted.value(accessToken) },
          IdentityAccessTokenResponse
        )
      ).pipe(Effect.mapError(asLoginError), Effect.withSpan("Auth.renewAccessToken"))

    const client: IdentityAuthClient = { login, renew }
    return client
  })
