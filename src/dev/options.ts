/**
 * Options of the dev control plane. Every field is optional; the defaults behave like a fresh
 * self-hosted Infisical in development mode (no host checks) with one organisation.
 */
import type { Authorities } from "./authorities.ts"
import type { Identity, Relay } from "./store.ts"

export type VerifyResult = { readonly ok: true } | { readonly ok: false; readonly message: string }

/** JWT-carrying machine-identity logins (`/api/v1/auth/<method>-auth/login` with `{identityId, jwt}`). */
export type JwtLoginMethod = "kubernetes" | "azure" | "gcp" | "oidc" | "jwt"

export interface IdentityLoginAttempt {
  readonly method: JwtLoginMethod | "aws"
  /** The identity named by `identityId`. */
  readonly identity: Identity
  /** The parsed request body. */
  readonly body: Readonly<Record<string, unknown>>
}

export interface RelayAwsLoginAttempt {
  readonly relay: Relay
  readonly iamHttpRequestMethod: string
  /** Base64 of the STS request body. */
  readonly iamRequestBody: string
  /** Base64 of the JSON header map. */
  readonly iamRequestHeaders: string
}

export interface ControlPlaneOptions {
  /**
   * The backend's `RELAY_AUTH_SECRET`. Undefined = not configured: instance registration answers
   * 401 `Invalid relay auth secret`, instance heartbeats 401 `Relay authentication not configured`.
   */
  readonly relayAuthSecret?: string | undefined
  /** The default organisation (created at start). Fixed ids let tests share org CAs across instances. */
  readonly org?: { readonly id?: string; readonly name?: string }
  /** CAs to reuse (see makeAuthorities); default: new ones, created lazily. */
  readonly authorities?: Authorities
  /** RSA modulus length when `authorities` is not given. Default 2048. */
  readonly keyBits?: number
  /**
   * Where the backend dials a relay's TLS port. Default: the stored host on port 8443, or the
   * port after the first `:` in the host. The TLS `servername` stays the stored host.
   */
  readonly relayTlsAddress?: (relayHost: string) => { readonly host: string; readonly port: number }
  /** Default: accept `jwt` equal to the identity's configured `jwt`; refuse aws-auth. */
  readonly verifyIdentityLogin?: (attempt: IdentityLoginAttempt) => VerifyResult | Promise<VerifyResult>
  /** Default: refuse with 401 `STS verification failed`. */
  readonly verifyRelayAwsLogin?: (attempt: RelayAwsLoginAttempt) => VerifyResult | Promise<VerifyResult>
  /** Clock for tokens and enrollment tokens (ms). Certificates always use the real clock. */
  readonly now?: () => number
  /** Idle timeout of the backend's relay sockets (upstream: 30 s). */
  readonly socketTimeoutMs?: number
  /** How long the gateway heartbeat waits for `PONG` (upstream: 10 s). */
  readonly pingTimeoutMs?: number
}

export interface ResolvedOptions {
  readonly relayAuthSecret: string | undefined
  readonly relayTlsAddress: (relayHost: string) => { readonly host: string; readonly port: number }
  readonly verifyIdentityLogin: (attempt: IdentityLoginAttempt) => VerifyResult | Promise<VerifyResult>
  readonly verifyRelayAwsLogin: (attempt: RelayAwsLoginAttempt) => VerifyResult | Promise<VerifyResult>
  readonly now: () => number
  readonly socketTimeoutMs: number
  readonly pingTimeoutMs: number
}

export const RELAY_TLS_PORT = 8443

/** upstream `createRelayConnection`: `host.split(":")`, port `parseInt(...) || 8443`. */
export const defaultRelayTlsAddress = (relayHost: string) => {
  const [host = relayHost, port] = relayHost.split(":")
  return { host, port: Number.parseInt(port ?? "", 10) || RELAY_TLS_PORT }
}

const defaultVerifyIdentityLogin = (attempt: IdentityLoginAttempt): VerifyResult => {
  if (attempt.method === "aws") return { ok: false, message: "STS verification failed" }
  const expected = attempt.identity.jwt
  return expected !== undefined && attempt.body["jwt"] === expected
    ? { ok: true }
    : { ok: false, message: "Access denied: JWT verification failed" }
}

export const resolveOptions = (options: ControlPlaneOptions): ResolvedOptions => ({
  relayAuthSecret: options.relayAuthSecret,
  relayTlsAddress: options.relayTlsAddress ?? defaultRelayTlsAddress,
  verifyIdentityLogin: options.verifyIdentityLogin ?? defaultVerifyIdentityLogin,
  verifyRelayAwsLogin: options.verifyRelayAwsLogin ?? (() => ({ ok: false, message: "STS verification failed" })),
  now: options.now ?? Date.now,
  socketTimeoutMs: options.socketTimeoutMs ?? 30_000,
  pingTimeoutMs: options.pingTimeoutMs ?? 10_000
})
