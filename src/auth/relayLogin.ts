/**
 * The v2 relay login (protocol.md §2.5): `POST /v2/relays/login`, unauthenticated, with either a
 * one-time enrollment token or a signed STS GetCallerIdentity. Both answer
 * `{accessToken, relayId, tokenType}`; the access token is the relay JWT used as bearer by
 * `/v2/relays/connect` and `/v2/relays/heartbeat`.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import { Effect, Redacted } from "effect"
import { RelayLoginRequest, RelayLoginResponse } from "../controlplane/Api.ts"
import { ControlPlaneError, postJson } from "../controlplane/ApiClient.ts"
import { signGetCallerIdentity } from "./awsSts.ts"

/** `{"method":"token","token":"<one-time enrollment token>"}`. */
export const loginWithEnrollmentToken = (api: HttpClient.HttpClient, token: Redacted.Redacted<string>) =>
  postJson(api, "relay login", "/v2/relays/login", RelayLoginRequest, { method: "token", token: Redacted.value(token) }, RelayLoginResponse)
    .pipe(Effect.withSpan("Auth.relayTokenLogin"))

/**
 * `{"method":"aws","relayId","iamHttpRequestMethod":"POST","iamRequestBody","iamRequestHeaders"}`:
 * body `base64("Action=GetCallerIdentity&Version=2011-06-15")`, headers base64 JSON of the signed
 * headers without `Content-Length`, plus `Host: sts.<region>.amazonaws.com`.
 */
export const loginWithAws = (api: HttpClient.HttpClient, base: HttpClient.HttpClient, relayId: string) =>
  signGetCallerIdentity({ includeContentLength: false }).pipe(
    Effect.provideService(HttpClient.HttpClient, base),
    Effect.mapError((e) => new ControlPlaneError({ operation: "AWS Auth", detail: e.message })),
    Effect.flatMap((signed) =>
      postJson(
        api,
        "relay login",
        "/v2/relays/login",
        RelayLoginRequest,
        {
          method: "aws",
          relayId,
          iamHttpRequestMethod: signed.iamHttpRequestMethod,
          iamRequestBody: signed.iamRequestBody,
          iamRequestHeaders: signed.iamRequestHeaders
        },
        RelayLoginResponse
      )
    ),
    Effect.withSpan("Auth.relayAwsLogin")
  )
