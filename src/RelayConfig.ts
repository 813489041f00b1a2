/**
 * RelayConfig: everything `relay start` decided from flags, env and stored state, as plain data.
 * Built once by the CLI (src/cli/resolveStartConfig.ts) and provided to every layer.
 */
import { Context, Data, Duration, Layer, type Option, type Redacted } from "effect"
import type { LimitsSource } from "./relay/Limits.ts"

export type MachineIdentityCredentials = Data.TaggedEnum<{
  "universal-auth": { readonly clientId: string; readonly clientSecret: Redacted.Redacted<string> }
  kubernetes: { readonly identityId: string; readonly serviceAccountTokenPath: string }
  azure: { readonly identityId: string }
  "gcp-id-token": { readonly identityId: string }
  "gcp-iam": { readonly identityId: string; readonly serviceAccountKeyFilePath: string }
  "aws-iam": { readonly identityId: string }
  "oidc-auth": { readonly identityId: string; readonly jwt: Redacted.Redacted<string> }
  "jwt-auth": { readonly identityId: string; readonly jwt: Redacted.Redacted<string> }
}>
export const MachineIdentityCredentials = Data.taggedEnum<MachineIdentityCredentials>()
export type AuthMethodName = MachineIdentityCredentials["_tag"]
export const authMethodNames: ReadonlyArray<AuthMethodName> = [
  "universal-auth",
  "kubernetes",
  "azure",
  "gcp-id-token",
  "gcp-iam",
  "aws-iam",
  "oidc-auth",
  "jwt-auth"
]

/** What a token-enrolled relay starts with (protocol.md §1.1 step 7). */
export type EnrollmentCredential =
  | { readonly _tag: "Enroll"; readonly enrollmentToken: Redacted.Redacted<string> }
  | {
    readonly _tag: "Stored"
    readonly accessToken: Redacted.Redacted<string>
    /** The given enrollment token equals the stored one, so it is not exchanged again. */
    readonly enrollmentTokenMatched: boolean
  }

/** How the relay proves who it is to the control plane (protocol.md §2.6). */
export type RelayMode = Data.TaggedEnum<{
  /** `--type=instance`: shared secret, v1 endpoints. */
  Instance: { readonly host: string; readonly authSecret: Redacted.Redacted<string> }
  /** Legacy org relay with a plain machine-identity access token, never refreshed. */
  OrgToken: { readonly host: string; readonly accessToken: Redacted.Redacted<string> }
  /** Legacy org relay that logs in as a machine identity and keeps the token fresh. */
  OrgIdentity: { readonly host: string; readonly credentials: MachineIdentityCredentials }
  /** v2 relay enrolled with a one-time token, or reusing the stored relay access token. */
  EnrolledToken: { readonly credential: EnrollmentCredential }
  /** v2 relay that logs in with a signed AWS STS GetCallerIdentity on every start. */
  EnrolledAws: { readonly relayId: string }
}>
export const RelayMode = Data.taggedEnum<RelayMode>()

export interface ListenAddress {
  readonly host: string
  readonly port: number
}

export interface RelayConfigShape {
  readonly name: string
  readonly mode: RelayMode
  /** API base URL, always ending in `/api`. */
  readonly apiUrl: string
  /** Where v2 state (`<name>.conf`) lives. */
  readonly statePath: string
  /** Extra headers for every relay API call (`INFISICAL_CUSTOM_HEADERS`). */
  readonly customHeaders: ReadonlyArray<readonly [string, string]>
  /** Bind address of both data-plane listeners; undefined = all interfaces (dual stack). */
  readonly listenHost: string | undefined
  readonly sshPort: number
  readonly tlsPort: number
  readonly statusAddress: Option.Option<ListenAddress>
  readonly heartbeat: {
    readonly firstAfter: Duration.Duration
    readonly retryEvery: Duration.Duration
    readonly every: Duration.Duration
  }
  readonly renewEvery: Duration.Duration
  /** How long live sessions get to finish after SIGTERM/SIGINT before they are closed. */
  readonly drainTimeout: Duration.Duration
  /** Admission limits and where they come from (src/relay/Limits.ts); absent = the defaults, no limits file. */
  readonly limits?: LimitsSource
}

export class RelayConfig extends Context.Tag("relay/RelayConfig")<RelayConfig, RelayConfigShape>() {
  static readonly layer = (config: RelayConfigShape) => Layer.succeed(RelayConfig, config)
}

/** Upstream's cadences (protocol.md §6). */
export const defaultTimers = {
  heartbeat: {
    firstAfter: Duration.seconds(10),
    retryEvery: Duration.seconds(10),
    every: Duration.minutes(30)
  },
  renewEvery: Duration.hours(6),
  drainTimeout: Duration.seconds(30)
} as const

/** The relay's host as registered, when the mode carries one (v2 hosts live server-side). */
export const registeredHost = (mode: RelayMode): string | undefined =>
  "host" in mode ? mode.host : undefined
