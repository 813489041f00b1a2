/**
 * Where the machine-identity logins get their proof (protocol.md §7), as the Infisical Go SDK does
 * it. Each source is contacted only by the login method that needs it.
 *
 * | method        | source                                                                      |
 * | ------------- | --------------------------------------------------------------------------- |
 * | kubernetes    | the service-account token file (re-read at every login: projected tokens rotate) |
 * | azure         | Azure IMDS `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com/` with `Metadata: true`, field `access_token` |
 * | gcp-id-token  | GCP metadata `GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=<identityId>&format=full` with `Metadata-Flavor: Google` |
 * | gcp-iam       | IAM Credentials `POST /v1/projects/-/serviceAccounts/<client_email>:signJwt` with payload `{"sub":<client_email>,"aud":<identityId>}`, authenticated by a JWT self-signed with the key file (Google's "service account authorization without OAuth") |
 *
 * Base URLs, overridable for tests and unusual networks:
 * - `INFISICAL_AZURE_METADATA_URL` (default `http://169.254.169.254`)
 * - `GCE_METADATA_HOST` (Google's own variable: `host[:port]`, default `metadata.google.internal`)
 * - `INFISICAL_GCP_IAM_CREDENTIALS_URL` (default `https://iamcredentials.googleapis.com`)
 *
 * Everything fetched here is a credential: it is kept Redacted and never put in an error message.
 */
import { createSign } from "node:crypto"
import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { Clock, Config, Data, Effect, Option, Redacted, Schema } from "effect"

export class CredentialSourceError extends Data.TaggedError("CredentialSourceError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

const envOr = (name: string, fallback: string) =>
  Config.string(name).pipe(
    Config.option,
    Effect.map(Option.filter((v) => v.trim() !== "")),
    Effect.map(Option.getOrElse(() => fallback)),
    Effect.orElseSucceed(() => fallback),
    Effect.map((url) => url.trim().replace(/\/+$/, ""))
  )

/** The metadata and IAM endpoints, read once from the environment. */
export const cloudEndpoints = Effect.gen(function* () {
  const gceHost = yield* envOr("GCE_METADATA_HOST", "metadata.google.internal")
  return {
    azureMetadata: yield* envOr("INFISICAL_AZURE_METADATA_URL", "http://169.254.169.254"),
    gcpMetadata: /^https?:\/\//.test(gceHost) ? gceHost : `http://${gceHost}`,
    gcpIamCredentials: yield* envOr("INFISICAL_GCP_IAM_CREDENTIALS_URL", "https://iamcredentials.googleapis.com")
  } as const
})
export type CloudEndpoints = Effect.Effect.Success<typeof cloudEndpoints>

/** An error's status and the provider's own error code, never the body as a whole. */
const failedResponse = (what: string, res: HttpClientResponse.HttpClientResponse) =>
  res.json.pipe(
    Effect.map((body): string => {
      if (typeof body !== "object" || body === null) return ""
      const b = body as Record<string, unknown>
      const code = typeof b["error"] === "string" ? b["error"] : typeof b["error"] === "object" && b["error"] !== null
        ? String((b["error"] as Record<string, unknown>)["status"] ?? "")
        : ""
      return code === "" ? "" : ` (${code})`
    }),
    Effect.orElseSucceed(() => ""),
    Effect.flatMap((code) => new CredentialSourceError({ detail: `${what}: unsuccessful response [status-code=${res.status}]${code}` }))
  )

const requestFailed = (what: string) => (e: { readonly _tag: string }) => {
  if (e instanceof CredentialSourceError) return Effect.fail(e)
  const reason = e._tag === "ParseError" || e._tag === "HttpBodyError"
    ? "unexpected response"
    : e._tag === "TimeoutException"
    ? "timed out"
    : "message" in e ? String(e.message) : e._tag
  return Effect.fail(new CredentialSourceError({ detail: `${what}: ${reason}` }))
}

/** upstream `GetKubernetesServiceAccountToken`. */
export const kubernetesServiceAccountToken = (path: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) => fs.readFileString(path)).pipe(
    Effect.map((token) => Redacted.make(token.trim())),
    Effect.mapError((e) => new CredentialSourceError({ detail: `unable to read the service account token: ${e.message}` }))
  )

const AzureToken = Schema.Struct({ access_token: Schema.Redacted(Schema.String) })

/** upstream `GetAzureMetadataToken` (system-assigned identity, default resource). */
export const azureMetadataToken = (endpoints: CloudEndpoints) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const url =
      `${endpoints.azureMetadata}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com/`
    const res = yield* client.execute(
      HttpClientRequest.get(url).pipe(
        HttpClientRequest.setHeader("Metadata", "true"),
        HttpClientRequest.setHeader("Accept", "application/json")
      )
    )
    if (res.status < 200 || res.status >= 300) return yield* failedResponse("GetAzureMetadataToken", res)
    const body = yield* Effect.flatMap(res.json, Schema.decodeUnknown(AzureToken))
    return body.access_token
  }).pipe(Effect.scoped, Effect.timeout("30 seconds"), Effect.catchAll(requestFailed("GetAzureMetadataToken")))

/** upstream `GetGCPMetadataToken`: the instance's identity token for the audience `identityId`. */
export const gcpMetadataIdentityToken = (endpoints: CloudEndpoints, identityId: string) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const url = `${endpoints.gcpMetadata}/computeMetadata/v1/instance/service-accounts/default/identity?audience=${
      encodeURIComponent(identityId)
    }&format=full`
    const res = yield* client.execute(HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("Metadata-Flavor", "Google")))
    if (res.status < 200 || res.status >= 300) return yield* failedResponse("GetGCPMetadataToken", res)
    return Redacted.make((yield* res.text).trim())
  }).pipe(Effect.scoped, Effect.timeout("30 seconds"), Effect.catchAll(requestFailed("GetGCPMetadataToken")))

const ServiceAccountKey = Schema.Struct({
  client_email: Schema.String,
  private_key: Schema.Redacted(Schema.String),
  private_key_id: Schema.optional(Schema.String)
})

const SignJwtResponse = Schema.Struct({ signedJwt: Schema.Redacted(Schema.String) })

const base64url = (data: string | Buffer) => Buffer.from(data).toString("base64url")

export const IAM_CREDENTIALS_AUDIENCE = "https://iamcredentials.googleapis.com/"

/** A one-hour RS256 JWT signed with the service account's key, accepted by googleapis.com APIs. */
const selfSignedJwt = (key: typeof ServiceAccountKey.Type, nowSeconds: number) =>
  Effect.try({
    try: () => {
      const header = { alg: "RS256", typ: "JWT", ...(key.private_key_id ? { kid: key.private_key_id } : {}) }
      const claims = {
        iss: key.client_email,
        sub: key.client_email,
        aud: IAM_CREDENTIALS_AUDIENCE,
        iat: nowSeconds,
        exp: nowSeconds + 3600
      }
      const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`
      const signature = createSign("RSA-SHA256").update(input).sign(Redacted.value(key.private_key))
      return Redacted.make(`${input}.${base64url(signature)}`)
    },
    catch: () => new CredentialSourceError({ detail: "the service account key file holds no usable private key" })
  })

/** upstream `GetGCPIamServiceAccountToken`. */
export const gcpIamSignedJwt = (endpoints: CloudEndpoints, identityId: string, keyFilePath: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(keyFilePath).pipe(
      Effect.mapError((e) => new CredentialSourceError({ detail: `unable to read the service account key file: ${e.message}` }))
    )
    const key = yield* Effect.try({ try: (): unknown => JSON.parse(text), catch: () => "not json" }).pipe(
      Effect.flatMap(Schema.decodeUnknown(ServiceAccountKey)),
      Effect.mapError(() =>
        new CredentialSourceError({ detail: "failed to unmarshal service account key: client_email and private_key are required" })
      )
    )
    const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
    const bearer = yield* selfSignedJwt(key, now)
    const client = yield* HttpClient.HttpClient
    const request = yield* HttpClientRequest.post(
      `${endpoints.gcpIamCredentials}/v1/projects/-/serviceAccounts/${key.client_email}:signJwt`
    ).pipe(
      HttpClientRequest.bearerToken(Redacted.value(bearer)),
      HttpClientRequest.bodyJson({ payload: JSON.stringify({ sub: key.client_email, aud: identityId }) })
    )
    const res = yield* client.execute(request)
    if (res.status < 200 || res.status >= 300) {
      return yield* failedResponse(
        "failed to sign JWT. Ensure the IAM Service Account Credentials API is enabled",
        res
      )
    }
    const body = yield* Effect.flatMap(res.json, Schema.decodeUnknown(SignJwtResponse))
    return body.signedJwt
  }).pipe(Effect.scoped, Effect.timeout("30 seconds"), Effect.catchAll(requestFailed("GetGCPIamServiceAccountToken")))
