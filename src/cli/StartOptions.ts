/**
 * The flags of `infisical relay start`, as upstream defines them (protocol.md §1.1), plus ours.
 *
 * Every flag is an optional string here: upstream treats an empty flag like a missing one and then
 * consults its env fallback, and the order in which that happens decides which error the user
 * sees. So env fallbacks are applied by `resolveStartConfig`, not by @effect/cli, and each
 * description names its variable for `--help`.
 */
import * as Options from "@effect/cli/Options"
import type { Option, Redacted } from "effect"
import { limitHelp, limitSpecs, type RelayLimits } from "../relay/Limits.ts"

const text = (name: string, description: string) =>
  Options.text(name).pipe(Options.optional, Options.withDescription(description))

const secret = (name: string, description: string) =>
  Options.redacted(name).pipe(Options.optional, Options.withDescription(description))

export const startOptions = {
  name: text("name", "Relay name (env INFISICAL_RELAY_NAME). Required."),
  host: text(
    "host",
    "IP or hostname gateways and the platform use to reach this relay (env INFISICAL_RELAY_HOST). " +
      "Required unless --enroll-method is set."
  ),
  type: text("type", "Relay type: instance or org (env INFISICAL_RELAY_TYPE, default org)."),
  enrollMethod: text(
    "enroll-method",
    "Enroll an enrolled (v2) relay: token or aws (env INFISICAL_RELAY_ENROLL_METHOD)."
  ),
  token: secret(
    "token",
    "With --enroll-method=token: the one-time enrollment token. Otherwise a machine-identity access token " +
      "(env INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN, INFISICAL_TOKEN, TOKEN)."
  ),
  relayId: text("relay-id", "Relay id, required for --enroll-method=aws (env INFISICAL_RELAY_ID)."),
  domain: text(
    "domain",
    "Infisical URL (env INFISICAL_DOMAIN, INFISICAL_API_URL; default https://app.infisical.com). /api is appended."
  ),
  authMethod: text(
    "auth-method",
    "Machine-identity login for org relays: universal-auth, kubernetes, azure, gcp-id-token, gcp-iam, aws-iam, " +
      "oidc-auth, jwt-auth (env INFISICAL_AUTH_METHOD)."
  ),
  clientId: text("client-id", "universal-auth client id (env INFISICAL_UNIVERSAL_AUTH_CLIENT_ID)."),
  clientSecret: secret(
    "client-secret",
    "universal-auth client secret (env INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET)."
  ),
  machineIdentityId: text("machine-identity-id", "Machine identity id (env INFISICAL_MACHINE_IDENTITY_ID)."),
  serviceAccountTokenPath: text(
    "service-account-token-path",
    "kubernetes: service account token file (env INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH)."
  ),
  serviceAccountKeyFilePath: text(
    "service-account-key-file-path",
    "gcp-iam: service account key file (env INFISICAL_GCP_IAM_SERVICE_ACCOUNT_KEY_FILE_PATH)."
  ),
  jwt: secret("jwt", "oidc-auth / jwt-auth: the JWT (env INFISICAL_JWT, INFISICAL_OIDC_AUTH_JWT for oidc-auth)."),
  // Our additions.
  sshPort: text("ssh-port", "SSH port for gateways (env INFISICAL_RELAY_SSH_PORT, default 2222)."),
  tlsPort: text("tls-port", "TLS port for clients (env INFISICAL_RELAY_TLS_PORT, default 8443)."),
  listenHost: text(
    "listen-host",
    "Address both listeners bind (env INFISICAL_RELAY_LISTEN_HOST, default all interfaces)."
  ),
  statusAddr: text(
    "status-addr",
    "host:port of the status server with /healthz, /readyz and /metrics (env INFISICAL_RELAY_STATUS_ADDR; off unless set)."
  ),
  heartbeatInterval: text(
    "heartbeat-interval",
    "Time between heartbeats once one succeeded, e.g. 30m (env INFISICAL_RELAY_HEARTBEAT_INTERVAL, default 30m)."
  ),
  heartbeatRetryInterval: text(
    "heartbeat-retry-interval",
    "Delay of the first heartbeat and between attempts until one succeeds (env INFISICAL_RELAY_HEARTBEAT_RETRY_INTERVAL, default 10s)."
  ),
  renewInterval: text(
    "renew-interval",
    "Time between certificate renewals, e.g. 6h (env INFISICAL_RELAY_RENEW_INTERVAL, default 6h)."
  ),
  drainTimeout: text(
    "drain-timeout",
    "On SIGTERM/SIGINT, how long live sessions get to finish before they are closed (env INFISICAL_RELAY_DRAIN_TIMEOUT, default 30s)."
  ),
  limitsFile: text(
    "limits-file",
    "JSON file of limits keyed by flag name, e.g. {\"max-tunnels\": 500}; overrides the flags below, re-read on SIGHUP " +
      "(env INFISICAL_RELAY_LIMITS_FILE)."
  ),
  // Admission limits (src/relay/Limits.ts), one flag each.
  ...(Object.fromEntries(limitSpecs.map((spec) => [spec.field, text(spec.flag, limitHelp(spec))])) as Record<
    keyof RelayLimits,
    Options.Options<Option.Option<string>>
  >)
} as const

interface StartFlagsBase {
  readonly name: Option.Option<string>
  readonly host: Option.Option<string>
  readonly type: Option.Option<string>
  readonly enrollMethod: Option.Option<string>
  readonly token: Option.Option<Redacted.Redacted<string>>
  readonly relayId: Option.Option<string>
  readonly domain: Option.Option<string>
  readonly authMethod: Option.Option<string>
  readonly clientId: Option.Option<string>
  readonly clientSecret: Option.Option<Redacted.Redacted<string>>
  readonly machineIdentityId: Option.Option<string>
  readonly serviceAccountTokenPath: Option.Option<string>
  readonly serviceAccountKeyFilePath: Option.Option<string>
  readonly jwt: Option.Option<Redacted.Redacted<string>>
  readonly sshPort: Option.Option<string>
  readonly tlsPort: Option.Option<string>
  readonly listenHost: Option.Option<string>
  readonly statusAddr: Option.Option<string>
  readonly heartbeatInterval: Option.Option<string>
  readonly heartbeatRetryInterval: Option.Option<string>
  readonly renewInterval: Option.Option<string>
  readonly drainTimeout: Option.Option<string>
  readonly limitsFile: Option.Option<string>
}

/** What @effect/cli hands the `start` handler: the flags above, and one per admission limit. */
export type StartFlags = StartFlagsBase & { readonly [K in keyof RelayLimits]: Option.Option<string> }
