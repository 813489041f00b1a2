/**
 * A signed AWS STS `GetCallerIdentity` request, the proof of identity behind the relay's v2 AWS
 * login (protocol.md §2.5) and the machine-identity `aws-iam` login (§7). The request is never sent
 * to AWS by the relay: the control plane replays it against STS.
 *
 * - Signing: `@smithy/signature-v4` (the AWS SDK's own signer) with SHA-256 from
 *   `@aws-crypto/sha256-js`, service `sts`, no `X-Amz-Content-Sha256` (as Go's signer for STS).
 *   Signed headers: `content-length;content-type;host;x-amz-date` (+ `x-amz-security-token`).
 * - Credentials: the AWS SDK's default Node chain (`@aws-sdk/credential-provider-node`): env
 *   `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, shared files, SSO, web
 *   identity, ECS, EC2 IMDS.
 * - Region, as the Infisical SDK resolves it: `AWS_REGION` or the shared config's `region`, else the
 *   EC2 IMDSv2 instance identity document (`AWS_EC2_METADATA_SERVICE_ENDPOINT` overrides the IMDS
 *   address, `AWS_EC2_METADATA_DISABLED=true` skips it). These are the AWS SDK's own variables and
 *   are read from the process environment, as the AWS SDK does.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Clock, Data, Effect, Schema } from "effect"

/** The AWS SDK pieces, loaded on first use: only the AWS logins need them, not every relay. */
const awsSdk = Effect.promise(async () => {
  const [{ Sha256 }, { defaultProvider }, { NODE_REGION_CONFIG_FILE_OPTIONS, NODE_REGION_CONFIG_OPTIONS }, { loadConfig }, { SignatureV4 }] =
    await Promise.all([
      import("@aws-crypto/sha256-js"),
      import("@aws-sdk/credential-provider-node"),
      import("@smithy/config-resolver"),
      import("@smithy/node-config-provider"),
      import("@smithy/signature-v4")
    ])
  return { Sha256, defaultProvider, NODE_REGION_CONFIG_FILE_OPTIONS, NODE_REGION_CONFIG_OPTIONS, loadConfig, SignatureV4 }
})

export class AwsAuthError extends Data.TaggedError("AwsAuthError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

export const STS_REQUEST_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
export const STS_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

/** What both logins send: method, base64 body, base64 JSON of the header map. */
export interface SignedStsRequest {
  readonly iamHttpRequestMethod: "POST"
  readonly iamRequestBody: string
  readonly iamRequestHeaders: string
  readonly region: string
}

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** Go's `http.CanonicalHeaderKey`: `x-amz-date` → `X-Amz-Date`. */
export const canonicalHeaderName = (name: string): string =>
  name
    .split("-")
    .map((part) => (part.length === 0 ? part : part[0]!.toUpperCase() + part.slice(1).toLowerCase()))
    .join("-")

const IdentityDocument = Schema.Struct({ region: Schema.String })

/** upstream `GetAwsEC2IdentityDocumentRegion`: IMDSv2 token, then the identity document (5 s). */
const imdsRegion = Effect.gen(function* () {
  if ((process.env["AWS_EC2_METADATA_DISABLED"] ?? "").toLowerCase() === "true") {
    return yield* new AwsAuthError({ detail: "no AWS region configured and EC2 instance metadata is disabled" })
  }
  const base = (process.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] || "http://169.254.169.254").replace(/\/+$/, "")
  const client = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)
  const token = yield* client.execute(
    HttpClientRequest.put(`${base}/latest/api/token`).pipe(
      HttpClientRequest.setHeader("X-aws-ec2-metadata-token-ttl-seconds", "21600")
    )
  ).pipe(Effect.flatMap((res) => res.text))
  const document = yield* client.execute(
    HttpClientRequest.get(`${base}/latest/dynamic/instance-identity/document`).pipe(
      HttpClientRequest.setHeader("X-aws-ec2-metadata-token", token),
      HttpClientRequest.setHeader("Accept", "application/json")
    )
  ).pipe(Effect.flatMap((res) => res.json), Effect.flatMap(Schema.decodeUnknown(IdentityDocument)))
  return document.region
}).pipe(
  Effect.scoped,
  Effect.timeout("5 seconds"),
  Effect.catchAll((e) =>
    e._tag === "AwsAuthError"
      ? Effect.fail(e)
      : Effect.fail(new AwsAuthError({ detail: `unable to get the AWS region from EC2 instance metadata: ${e._tag === "TimeoutException" ? "timed out" : e.message}` }))
  )
)

/** `AWS_REGION` / shared config region, else the EC2 identity document's region. */
export const resolveAwsRegion = Effect.flatMap(awsSdk, (sdk) =>
  Effect.tryPromise({
    try: () => sdk.loadConfig(sdk.NODE_REGION_CONFIG_OPTIONS, sdk.NODE_REGION_CONFIG_FILE_OPTIONS)(),
    catch: describe
  })
).pipe(
  Effect.flatMap((region) => (typeof region === "string" && region !== "" ? Effect.succeed(region) : Effect.fail("empty"))),
  Effect.orElse(() => imdsRegion)
)

/** Credentials from the AWS SDK's default Node chain. */
const resolveAwsCredentials = Effect.flatMap(awsSdk, (sdk) =>
  Effect.tryPromise({
    try: () => sdk.defaultProvider()(),
    catch: (e) => new AwsAuthError({ detail: `unable to retrieve AWS credentials: ${describe(e)}` })
  })
)

/**
 * Sign `POST https://sts.<region>.amazonaws.com/` with body `Action=GetCallerIdentity&Version=2011-06-15`.
 * The header map holds every signed header under Go's canonical names (first value each), then
 * `Host`; `Content-Length` is left out for the relay login (§2.5) and kept for `aws-iam` (§7).
 * Keys are sorted, as Go's `json.Marshal` of a map sorts them.
 */
export const signGetCallerIdentity = (options: { readonly includeContentLength: boolean }) =>
  Effect.gen(function* () {
    const region = yield* resolveAwsRegion
    const credentials = yield* resolveAwsCredentials
    const host = `sts.${region}.amazonaws.com`
    const now = yield* Clock.currentTimeMillis
    const { SignatureV4, Sha256 } = yield* awsSdk
    const signer = new SignatureV4({ credentials, region, service: "sts", sha256: Sha256, applyChecksum: false })
    const signed = yield* Effect.tryPromise({
      try: () =>
        signer.sign(
          {
            method: "POST",
            protocol: "https:",
            hostname: host,
            path: "/",
            query: {},
            headers: {
              host,
              "content-type": STS_CONTENT_TYPE,
              "content-length": String(Buffer.byteLength(STS_REQUEST_BODY))
            },
            body: STS_REQUEST_BODY
          },
          { signingDate: new Date(now) }
        ),
      catch: (e) => new AwsAuthError({ detail: `error signing STS request: ${describe(e)}` })
    })
    const headers: Record<string, string> = {}
    for (const [name, value] of Object.entries(signed.headers)) {
      const lower = name.toLowerCase()
      if (lower === "content-length" || lower === "host") continue
      headers[canonicalHeaderName(name)] = value
    }
    headers["Host"] = host
    if (options.includeContentLength) {
      headers["Content-Type"] = STS_CONTENT_TYPE
      headers["Content-Length"] = String(Buffer.byteLength(STS_REQUEST_BODY))
    }
    const sorted = Object.fromEntries(Object.keys(headers).sort().map((k) => [k, headers[k]!]))
    const request: SignedStsRequest = {
      iamHttpRequestMethod: "POST",
      iamRequestBody: Buffer.from(STS_REQUEST_BODY).toString("base64"),
      iamRequestHeaders: Buffer.from(JSON.stringify(sorted)).toString("base64"),
      region
    }
    return request
  })
