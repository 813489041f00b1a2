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
