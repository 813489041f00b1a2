/**
 * Schemas of the relay API (protocol.md §2, control-plane.md). Private keys decode to Redacted so
 * they cannot reach a log by accident.
 */
import { Schema } from "effect"

export const PkiBundle = Schema.Struct({
  serverCertificate: Schema.String,
  serverPrivateKey: Schema.Redacted(Schema.String),
  clientCertificateChain: Schema.String
})

export const SshBundle = Schema.Struct({
  serverCertificate: Schema.String,
  serverPrivateKey: Schema.Redacted(Schema.String),
  clientCAPublicKey: Schema.String
})

/** 200 body of register-instance-relay, register-org-relay and v2 connect (which adds relayId). */
export const RelayCredentialsResponse = Schema.Struct({
  relayId: Schema.optional(Schema.String),
  pki: PkiBundle,
  ssh: SshBundle
})
export type RelayCredentialsResponse = typeof RelayCredentialsResponse.Type

export const RegisterRequest = Schema.Struct({ host: Schema.String, name: Schema.String })
export const HeartbeatRequest = Schema.Struct({ name: Schema.String })

export const RelayLoginRequest = Schema.Union(
  Schema.Struct({ method: Schema.Literal("token"), token: Schema.String }),
  Schema.Struct({
    method: Schema.Literal("aws"),
    relayId: Schema.String,
    iamHttpRequestMethod: Schema.String,
    iamRequestBody: Schema.String,
    iamRequestHeaders: Schema.String
  })
)

export const RelayLoginResponse = Schema.Struct({
  accessToken: Schema.Redacted(Schema.String),
  relayId: Schema.String,
  tokenType: Schema.String
})

/** Upstream's error body: `{reqId, statusCode, message, error}`; only `message` is relied on. */
export const ApiErrorBody = Schema.Struct({
  message: Schema.optional(Schema.Unknown),
  error: Schema.optional(Schema.String)
})

/**
 * Machine-identity logins and `token/renew` (protocol.md §7): every one answers
 * `{accessToken, expiresIn, accessTokenMaxTTL, tokenType}` (seconds; 0 = no expiry / no max).
 */
export const IdentityAccessTokenResponse = Schema.Struct({
  accessToken: Schema.Redacted(Schema.String),
  expiresIn: Schema.Number,
  accessTokenMaxTTL: Schema.Number,
  tokenType: Schema.optional(Schema.String)
})
export type IdentityAccessTokenResponse = typeof IdentityAccessTokenResponse.Type

export const UniversalAuthLoginRequest = Schema.Struct({
  clientId: Schema.String,
  clientSecret: Schema.String,
  organizationSlug: Schema.optional(Schema.String)
})

/** kubernetes, azure, gcp (id token and IAM), oidc and jwt logins. */
export const JwtLoginRequest = Schema.Struct({
  identityId: Schema.String,
  jwt: Schema.String,
  organizationSlug: Schema.optional(Schema.String)
})

export const AwsIamLoginRequest = Schema.Struct({
  identityId: Schema.String,
  iamHttpRequestMethod: Schema.String,
  iamRequestBody: Schema.String,
  iamRequestHeaders: Schema.String,
  organizationSlug: Schema.optional(Schema.String)
})

export const RenewAccessTokenRequest = Schema.Struct({ accessToken: Schema.String })
