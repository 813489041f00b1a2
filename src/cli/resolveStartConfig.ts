/**
 * Turn `relay start` flags, env and stored state into a RelayConfig, in upstream's validation
 * order and with upstream's messages (protocol.md §1.1 steps 1-9). Env is read through Effect's
 * Config (tests swap the ConfigProvider) and files through FileSystem.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Config, Data, Duration, Effect, Option, Redacted } from "effect"
import {
  authMethodNames,
  defaultTimers,
  type AuthMethodName,
  type EnrollmentCredential,
  type ListenAddress,
  MachineIdentityCredentials,
  RelayMode,
  type RelayConfigShape
} from "../RelayConfig.ts"
import { envNameOf, type LimitsSource, limitSpecs, parseLimitText, readLimitsFile, type RelayLimits, defaultRelayLimits } from "../relay/Limits.ts"
import { readRelayState, relayStatePath, StateKeys } from "../state/RelayStateFile.ts"
import { parseCustomHeaders } from "./customHeaders.ts"
import { parseDuration } from "./duration.ts"
import type { StartFlags } from "./StartOptions.ts"

/** A refusal to start: upstream prints `error: <error>` then each message, and exits 1. */
export class StartupError extends Data.TaggedError("StartupError")<{
  readonly error: string
  readonly messages: ReadonlyArray<string>
}> {
  override get message(): string {
    return [this.error, ...this.messages].join(": ")
  }
}

const fail = (error: string, ...messages: ReadonlyArray<string>) =>
  Effect.fail(new StartupError({ error, messages }))

/** A non-empty env value (empty counts as unset, as with Go's os.Getenv checks). */
const env = (name: string) =>
  Config.string(name).pipe(
    Config.option,
    Effect.map(Option.filter((v) => v !== "")),
    Effect.orElseSucceed(() => Option.none<string>())
  )

const envSecret = (name: string) => Effect.map(env(name), Option.map(Redacted.make))

const nonEmpty = <A extends string | Redacted.Redacted<string>>(o: Option.Option<A>): Option.Option<A> =>
  Option.filter(o, (v) => (typeof v === "string" ? v : Redacted.value(v)) !== "")

/** flag, else the first set env variable. */
const flagOrEnv = (flag: Option.Option<string>, ...names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const f = nonEmpty(flag)
    if (Option.isSome(f)) return f
    for (const name of names) {
      const v = yield* env(name)
      if (Option.isSome(v)) return v
    }
    return Option.none<string>()
  })

const secretFlagOrEnv = (flag: Option.Option<Redacted.Redacted<string>>, ...names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const f = nonEmpty(flag)
    if (Option.isSome(f)) return f
    const v = yield* flagOrEnv(Option.none(), ...names)
    return Option.map(v, Redacted.make)
  })

/** Append `/api` exactly once, tolerating trailing slashes. */
export const withApiSuffix = (url: string): string => {
  const base = url.trim().replace(/\/+$/, "")
  return base.endsWith("/api") ? base : `${base}/api`
}

const readJsonField = (path: string, field: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path)
    const parsed: unknown = JSON.parse(text)
    const value = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>)[field] : undefined
    return typeof value === "string" && value !== "" ? Option.some(value) : Option.none<string>()
  }).pipe(Effect.orElseSucceed(() => Option.none<string>()))

/**
 * Domain resolution (protocol.md §1.1): --domain > stored INFISICAL_RELAY_DOMAIN > the logged-in
 * user's domain > INFISICAL_DOMAIN > INFISICAL_API_URL > `.infisical.json` > app.infisical.com.
 */
export const resolveApiUrl = (domainFlag: Option.Option<string>, storedDomain: Option.Option<string>, home: string) =>
  Effect.gen(function* () {
    const paths = yield* Path.Path
    const candidates = [
      () => Effect.succeed(nonEmpty(domainFlag)),
      () => Effect.succeed(nonEmpty(storedDomain)),
      () => readJsonField(paths.join(home, ".infisical", "infisical-config.json"), "LoggedInUserDomain"),
      () => env("INFISICAL_DOMAIN"),
      () => env("INFISICAL_API_URL"),
      () =>
        readJsonField(".infisical.json", "domain").pipe(
          Effect.map(Option.filter((d) => d.startsWith("http://") || d.startsWith("https://")))
        )
    ]
    for (const candidate of candidates) {
      const found = yield* candidate()
      if (Option.isSome(found)) return withApiSuffix(found.value)
    }
    return withApiSuffix("https://app.infisical.com")
  })

const parsePort = (label: string, raw: string) => {
  const port = Number(raw)
  return Number.isInteger(port) && port >= 0 && port <= 65535 && /^\d+$/.test(raw)
    ? Effect.succeed(port)
    : fail(`invalid ${label} "${raw}": expected a port number between 0 and 65535`)
}

const durationSetting = (label: string, flag: Option.Option<string>, envName: string, fallback: Duration.Duration) =>
  Effect.gen(function* () {
    const raw = yield* flagOrEnv(flag, envName)
    if (Option.isNone(raw)) return fallback
    const parsed = parseDuration(raw.value)
    return parsed ?? (yield* fail(`invalid ${label} "${raw.value}": expected a duration such as 10s, 30m or 6h`))
  })

/**
 * The admission limits: defaults < env < flags, then the limits file over all of them. A bad value
 * or a bad file refuses to start, naming the flag (or the file and its key).
 */
const resolveLimits = (flags: StartFlags) =>
  Effect.gen(function* () {
    const base: Record<string, unknown> = { ...defaultRelayLimits }
    for (const spec of limitSpecs) {
      // `?? none`: flag records built by hand (tests) may predate a limit.
      const raw = yield* flagOrEnv(flags[spec.field] ?? Option.none(), envNameOf(spec))
      if (Option.isNone(raw)) continue
      const parsed = parseLimitText(spec, raw.value)
      if (parsed._tag === "Left") return yield* fail(`invalid --${spec.flag} "${raw.value}": expected ${parsed.left}`)
      base[spec.field] = parsed.right
    }
    const file = Option.getOrUndefined(yield* flagOrEnv(flags.limitsFile ?? Option.none(), "INFISICAL_RELAY_LIMITS_FILE"))
    const initial = file === undefined
      ? (base as unknown as RelayLimits)
      : yield* readLimitsFile(file, base as unknown as RelayLimits).pipe(Effect.mapError((e) => new StartupError({ error: e.message, messages: [] })))
    const source: LimitsSource = { base: base as unknown as RelayLimits, file, initial }
    return source
  })

/** `host:port`, `[v6]:port` or `:port` (loopback by default: status pages are not for the internet). */
export const parseListenAddress = (raw: string): ListenAddress | undefined => {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(raw.trim()) ?? /^()()(\d+)$/.exec(raw.trim())
  if (!m) return undefined
  const port = Number(m[3])
  if (port > 65535) return undefined
  return { host: m[1] || m[2] || "127.0.0.1", port }
}

const machineIdentityCredentials = (method: AuthMethodName, flags: StartFlags) =>
  Effect.gen(function* () {
    const required = <A>(value: Option.Option<A>, flag: string, envName: string) =>
      Option.match(value, {
        onNone: () => fail(`please provide ${flag} flag`, `unable to get ${flag} flag or ${envName} env`),
        onSome: Effect.succeed
      })
    const identityId = () =>
      flagOrEnv(flags.machineIdentityId, "INFISICAL_MACHINE_IDENTITY_ID").pipe(
        Effect.flatMap((v) => required(v, "machine-identity-id", "INFISICAL_MACHINE_IDENTITY_ID"))
      )
    const jwt = (...envNames: ReadonlyArray<string>) =>
      secretFlagOrEnv(flags.jwt, ...envNames).pipe(Effect.flatMap((v) => required(v, "jwt", envNames[0]!)))
    switch (method) {
      case "universal-auth": {
        const clientId = yield* flagOrEnv(flags.clientId, "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID").pipe(
          Effect.flatMap((v) => required(v, "client-id", "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID"))
        )
        const clientSecret = yield* secretFlagOrEnv(flags.clientSecret, "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET").pipe(
          Effect.flatMap((v) => required(v, "client-secret", "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"))
        )
        return MachineIdentityCredentials["universal-auth"]({ clientId, clientSecret })
      }
      case "kubernetes": {
        const id = yield* identityId()
        const path = yield* flagOrEnv(
          flags.serviceAccountTokenPath,
          "INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH"
        ).pipe(
          Effect.flatMap((v) =>
            required(v, "service-account-token-path", "INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH")
          )
        )
        return MachineIdentityCredentials.kubernetes({ identityId: id, serviceAccountTokenPath: path })
      }
      case "azure":
        return MachineIdentityCredentials.azure({ identityId: yield* identityId() })
      case "gcp-id-token":
        return MachineIdentityCredentials["gcp-id-token"]({ identityId: yield* identityId() })
      case "gcp-iam": {
        const id = yield* identityId()
        const path = yield* flagOrEnv(
          flags.serviceAccountKeyFilePath,
          "INFISICAL_GCP_IAM_SERVICE_ACCOUNT_KEY_FILE_PATH"
        ).pipe(
          Effect.flatMap((v) =>
            required(v, "service-account-key-file-path", "INFISICAL_GCP_IAM_SERVICE_ACCOUNT_KEY_FILE_PATH")
          )
        )
        return MachineIdentityCredentials["gcp-iam"]({ identityId: id, serviceAccountKeyFilePath: path })
      }
      case "aws-iam":
        return MachineIdentityCredentials["aws-iam"]({ identityId: yield* identityId() })
      case "oidc-auth": {
        const id = yield* identityId()
        return MachineIdentityCredentials["oidc-auth"]({
          identityId: id,
          jwt: yield* jwt("INFISICAL_JWT", "INFISICAL_OIDC_AUTH_JWT")
        })
      }
      case "jwt-auth": {
        const id = yield* identityId()
        return MachineIdentityCredentials["jwt-auth"]({ identityId: id, jwt: yield* jwt("INFISICAL_JWT") })
      }
    }
  })

export const resolveStartConfig = (flags: StartFlags) =>
  Effect.gen(function* () {
    // 1. Name (env value trimmed).
    const envName = (yield* env("INFISICAL_RELAY_NAME")).pipe(
      Option.map((v) => v.trim()),
      Option.filter((v) => v !== "")
    )
    const name = Option.orElse(nonEmpty(flags.name), () => envName)
    if (Option.isNone(name)) {
      return yield* fail("please provide name flag", "unable to get name flag or INFISICAL_RELAY_NAME env")
    }
    const relayName = name.value

    // 2. Enroll method.
    const enrollMethod = yield* flagOrEnv(flags.enrollMethod, "INFISICAL_RELAY_ENROLL_METHOD")
    if (Option.isSome(enrollMethod) && enrollMethod.value !== "token" && enrollMethod.value !== "aws") {
      return yield* fail(`invalid --enroll-method "${enrollMethod.value}": supported values are "token" and "aws"`)
    }

    // 3. Host, required unless enrolled.
    const host = yield* flagOrEnv(flags.host, "INFISICAL_RELAY_HOST")
    if (Option.isNone(host) && Option.isNone(enrollMethod)) {
      return yield* fail("please provide host flag", "unable to get host flag or INFISICAL_RELAY_HOST env")
    }

    // 4. Type: anything but exactly "instance" is an org relay.
    const type = Option.getOrElse(yield* flagOrEnv(flags.type, "INFISICAL_RELAY_TYPE"), () => "org")

    // 5. Domain, which may come from the stored state.
    const home = Option.getOrElse(yield* env("HOME"), () => "/root")
    const statePath = relayStatePath(relayName, {
      euid: process.geteuid?.() ?? 0,
      home,
      stateDir: Option.getOrUndefined(yield* env("INFISICAL_RELAY_STATE_DIR"))
    })
    const state = yield* readRelayState(statePath)
    const stored = (key: string) => nonEmpty(Option.fromNullable(state.get(key)))
    const apiUrl = yield* resolveApiUrl(flags.domain, stored(StateKeys.domain), home)

    const mode: RelayMode = yield* Effect.gen(function* () {
      // 6. AWS enrollment.
      if (Option.isSome(enrollMethod) && enrollMethod.value === "aws") {
        const relayId = Option.orElse(
          yield* flagOrEnv(flags.relayId, "INFISICAL_RELAY_ID"),
          () => stored(StateKeys.relayId)
        )
        if (Option.isNone(relayId)) return yield* fail("--relay-id is required when --enroll-method=aws")
        return RelayMode.EnrolledAws({ relayId: relayId.value })
      }
      // 7. Token enrollment: a new token is exchanged, the stored access token is reused.
      if (Option.isSome(enrollMethod)) {
        const token = nonEmpty(flags.token)
        const storedAccess = Option.orElse(yield* envSecret(StateKeys.accessToken), () =>
          Option.map(stored(StateKeys.accessToken), Redacted.make)
        )
        const storedEnrollment = stored(StateKeys.enrollmentToken)
        let credential: EnrollmentCredential
        if (Option.isSome(token)) {
          const matched = Option.isSome(storedEnrollment) && storedEnrollment.value === Redacted.value(token.value)
          credential = matched && Option.isSome(storedAccess)
            ? { _tag: "Stored", accessToken: storedAccess.value, enrollmentTokenMatched: true }
            : { _tag: "Enroll", enrollmentToken: token.value }
        } else if (Option.isSome(storedAccess)) {
          credential = { _tag: "Stored", accessToken: storedAccess.value, enrollmentTokenMatched: false }
        } else {
          return yield* fail("--token is required when --enroll-method=token (no stored access token found)")
        }
        return RelayMode.EnrolledToken({ credential })
      }
      const relayHost = Option.getOrThrow(host)
      // 8. Instance relay: the shared secret, env only.
      if (type === "instance") {
        const secret = yield* envSecret("INFISICAL_RELAY_AUTH_SECRET")
        if (Option.isNone(secret)) {
          return yield* fail("INFISICAL_RELAY_AUTH_SECRET is not set", "unable to get relay auth secret")
        }
        return RelayMode.Instance({ host: relayHost, authSecret: secret.value })
      }
      // 9. Legacy org relay: a plain token, else a machine-identity login.
      const token = yield* secretFlagOrEnv(
        flags.token,
        "INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN",
        "INFISICAL_TOKEN",
        "TOKEN"
      )
      if (Option.isSome(token)) return RelayMode.OrgToken({ host: relayHost, accessToken: token.value })
      const method = yield* flagOrEnv(flags.authMethod, "INFISICAL_AUTH_METHOD")
      if (Option.isNone(method)) {
        return yield* fail("please provide auth-method flag", "unable to get infisical client")
      }
      if (!(authMethodNames as ReadonlyArray<string>).includes(method.value)) {
        return yield* fail(`Invalid login method: ${method.value}`, "unable to get infisical client")
      }
      const credentials = yield* machineIdentityCredentials(method.value as AuthMethodName, flags)
      return RelayMode.OrgIdentity({ host: relayHost, credentials })
    })

    // Our additions, validated after upstream's checks so its messages keep their order.
    const sshPort = yield* parsePort(
      "--ssh-port",
      Option.getOrElse(yield* flagOrEnv(flags.sshPort, "INFISICAL_RELAY_SSH_PORT"), () => "2222")
    )
    const tlsPort = yield* parsePort(
      "--tls-port",
      Option.getOrElse(yield* flagOrEnv(flags.tlsPort, "INFISICAL_RELAY_TLS_PORT"), () => "8443")
    )
    const listenHost = Option.getOrUndefined(yield* flagOrEnv(flags.listenHost, "INFISICAL_RELAY_LISTEN_HOST"))
    const statusRaw = yield* flagOrEnv(flags.statusAddr, "INFISICAL_RELAY_STATUS_ADDR")
    let statusAddress = Option.none<ListenAddress>()
    if (Option.isSome(statusRaw)) {
      const parsed = parseListenAddress(statusRaw.value)
      if (!parsed) return yield* fail(`invalid --status-addr "${statusRaw.value}": expected host:port`)
      statusAddress = Option.some(parsed)
    }
    const customHeaders = parseCustomHeaders(Option.getOrElse(yield* env("INFISICAL_CUSTOM_HEADERS"), () => ""))

    const retryEvery = yield* durationSetting(
      "--heartbeat-retry-interval",
      flags.heartbeatRetryInterval,
      "INFISICAL_RELAY_HEARTBEAT_RETRY_INTERVAL",
      defaultTimers.heartbeat.retryEvery
    )
    const heartbeatEvery = yield* durationSetting(
      "--heartbeat-interval",
      flags.heartbeatInterval,
      "INFISICAL_RELAY_HEARTBEAT_INTERVAL",
      defaultTimers.heartbeat.every
    )
    const renewEvery = yield* durationSetting(
      "--renew-interval",
      flags.renewInterval,
      "INFISICAL_RELAY_RENEW_INTERVAL",
      defaultTimers.renewEvery
    )

    const drainTimeout = yield* durationSetting(
      "--drain-timeout",
      flags.drainTimeout,
      "INFISICAL_RELAY_DRAIN_TIMEOUT",
      defaultTimers.drainTimeout
    )

    const limits = yield* resolveLimits(flags)

    const config: RelayConfigShape = {
      name: relayName,
      mode,
      apiUrl,
      statePath,
      customHeaders,
      listenHost,
      sshPort,
      tlsPort,
      statusAddress,
      heartbeat: { firstAfter: retryEvery, retryEvery, every: heartbeatEvery },
      renewEvery,
      drainTimeout,
      limits
    }
    return config
  })
