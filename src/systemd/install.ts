/**
 * `infisical relay systemd install [name]` and `uninstall [name]` (protocol.md §1.2), with
 * upstream's checks, files, systemctl calls and messages. Every path is written under
 * SystemdHost.root and systemctl goes through SystemdHost, so tests need neither root nor systemd.
 *
 * Differences from upstream, all on the safe side: `--log-file` is validated before anything is
 * written or an enrollment token consumed; the enrollment token may also come from
 * `INFISICAL_RELAY_ENROLLMENT_TOKEN` (keeps it out of argv); secrets are Redacted until written.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import * as Path from "@effect/platform/Path"
import { Config, Effect, Option, Redacted } from "effect"
import { loginWithEnrollmentToken } from "../auth/relayLogin.ts"
import { parseCustomHeaders } from "../cli/customHeaders.ts"
import { resolveApiUrl, StartupError } from "../cli/resolveStartConfig.ts"
import { apiClientFor } from "../controlplane/ApiClient.ts"
import { parseStateText, StateKeys, writeRelayState } from "../state/RelayStateFile.ts"
import {
  envFile,
  envFileEntries,
  envFilePath,
  type InstallPlan,
  LEGACY_CONFIG_PATH,
  LEGACY_SERVICE_NAME,
  LOGROTATE_DIR,
  logrotateFile,
  logrotatePath,
  stateFilePath,
  unitFile,
  unitPath
} from "./files.ts"
import { SystemdHost } from "./SystemdHost.ts"

export interface InstallOptions {
  /** The positional argument. */
  readonly name: Option.Option<string>
  /** Hidden, deprecated `--name`. */
  readonly nameFlag: Option.Option<string>
  readonly token: Option.Option<Redacted.Redacted<string>>
  readonly enrollMethod: Option.Option<string>
  readonly relayId: Option.Option<string>
  readonly logFile: Option.Option<string>
  readonly domain: Option.Option<string>
  readonly type: Option.Option<string>
  readonly host: Option.Option<string>
  readonly relayAuthSecret: Option.Option<Redacted.Redacted<string>>
}

const fail = (error: string, ...messages: ReadonlyArray<string>) => Effect.fail(new StartupError({ error, messages }))

const nonEmpty = (o: Option.Option<string>) => Option.filter(o, (v) => v !== "")

const envValue = (name: string) =>
  Config.string(name).pipe(
    Config.option,
    Effect.map(Option.filter((v) => v !== "")),
    Effect.orElseSucceed(() => Option.none<string>())
  )

/** Where a host path really is (SystemdHost.root + path). */
const onHost = Effect.gen(function* () {
  const host = yield* SystemdHost
  const path = yield* Path.Path
  return (p: string) => path.join(host.root, p)
})

const checkPlatform = (what: "installation" | "uninstallation") =>
  Effect.gen(function* () {
    const host = yield* SystemdHost
    if (host.platform !== "linux") return yield* fail(`systemd service ${what} is only supported on Linux`)
    if (host.euid !== 0) return yield* fail(`systemd service ${what} requires root/sudo privileges`)
  })

/** upstream `ensureNoLegacyConflict`. */
const ensureNoLegacyConflict = (name: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const at = yield* onHost
    if (!(yield* fs.exists(at(unitPath(LEGACY_SERVICE_NAME))).pipe(Effect.orElseSucceed(() => false)))) return
    const legacy = yield* fs.readFileString(at(LEGACY_CONFIG_PATH)).pipe(Effect.orElseSucceed(() => ""))
    const legacyName = parseStateText(legacy).get("INFISICAL_RELAY_NAME")
    if (name === legacyName || name === LEGACY_SERVICE_NAME) {
      return yield* fail(
        `cannot install relay '${name}': it conflicts with the existing legacy relay service; uninstall it first with: sudo infisical relay systemd uninstall`,
        "Failed to install relay systemd service"
      )
    }
  })

/** Absolute, cleaned `--log-file`, or undefined. */
const checkLogFile = (logFile: Option.Option<string>) =>
  Effect.gen(function* () {
    const path = yield* Path.Path
    const raw = nonEmpty(logFile)
    if (Option.isNone(raw)) return undefined
    const cleaned = path.normalize(raw.value).replace(/(.)\/+$/, "$1")
    if (!path.isAbsolute(cleaned)) {
      return yield* fail(`log-file must be an absolute path: ${cleaned}`, "Failed to install relay systemd service")
    }
    return cleaned
  })

const writeEnvFile = (name: string, plan: InstallPlan) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const at = yield* onHost
    const file = at(envFilePath(name))
    yield* fs.makeDirectory(path.dirname(file), { recursive: true, mode: 0o755 })
    yield* fs.writeFileString(file, envFile(envFileEntries(name, plan)), { mode: 0o600 })
    yield* fs.chmod(file, 0o600)
  })

/** upstream `finalizeRelaySystemdInstall` plus the `enable` of the command. */
const finalizeInstall = (name: string, logFile: string | undefined) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const host = yield* SystemdHost
    const at = yield* onHost
    if (logFile !== undefined) {
      yield* fs.makeDirectory(at(path.dirname(logFile)), { recursive: true, mode: 0o755 })
      const file = at(logFile)
      if (!(yield* fs.exists(file))) yield* fs.writeFileString(file, "", { mode: 0o644 })
    }
    yield* fs.writeFileString(
      at(unitPath(name)),
      unitFile({ description: `Infisical Relay Service (${name})`, environmentFile: envFilePath(name), logFile }),
      { mode: 0o644 }
    )
    if (logFile !== undefined) {
      if (yield* fs.exists(at(LOGROTATE_DIR))) {
        yield* fs.writeFileString(at(logrotatePath(name)), logrotateFile(logFile), { mode: 0o644 })
      } else {
        yield* Effect.logWarning("logrotate.d directory does not exist. log files will not be pruned automatically.")
      }
    }
    yield* host.systemctl(["daemon-reload"]).pipe(
      Effect.catchAll((e) => fail(`failed to reload systemd: ${e.message}`, "Failed to install relay systemd service"))
    )
    yield* Effect.logInfo(`Successfully installed systemd service '${name}'`)
    yield* Effect.logInfo(`To start the service, run: sudo systemctl start ${name}`)
    yield* Effect.logInfo(`To enable the service on boot, run: sudo systemctl enable ${name}`)
    yield* host.systemctl(["enable", name]).pipe(
      Effect.catchAll((e) => fail(e.message, "Failed to enable relay systemd service"))
    )
    yield* Effect.logInfo(`Successfully installed and enabled ${name} service`)
    yield* Effect.logInfo(`To start the service, run: sudo systemctl start ${name}`)
  }).pipe(
    Effect.catchTag("SystemError", (e) => fail(e.message, "Failed to install relay systemd service")),
    Effect.catchTag("BadArgument", (e) => fail(e.message, "Failed to install relay systemd service"))
  )

/** `relay systemd install [name]`. */
export const installRelayService = Effect.fn("relay.systemd.install")(function* (options: InstallOptions) {
  yield* checkPlatform("installation")
  const domain = Option.getOrUndefined(nonEmpty(options.domain))
  const name = Option.getOrElse(Option.orElse(nonEmpty(options.name), () => nonEmpty(options.nameFlag)), () => "")
  const requireName = name === ""
    ? fail("relay name is required (provide as positional argument or --name flag)")
    : Effect.void
  const enrollMethod = Option.getOrElse(options.enrollMethod, () => "")

  if (enrollMethod === "token") {
    yield* requireName
    const token = yield* Option.match(Option.filter(options.token, (t) => Redacted.value(t) !== ""), {
      onSome: (t) => Effect.succeed(Option.some(t)),
      onNone: () => Effect.map(envValue("INFISICAL_RELAY_ENROLLMENT_TOKEN"), Option.map(Redacted.make))
    })
    if (Option.isNone(token)) return yield* fail("--token is required when --enroll-method=token")
    const logFile = yield* checkLogFile(options.logFile)
    yield* ensureNoLegacyConflict(name)
    // The one-time token is exchanged now; only the resulting access token is stored.
    const home = Option.getOrElse(yield* envValue("HOME"), () => "/root")
    const apiUrl = yield* resolveApiUrl(options.domain, Option.none(), home)
    const customHeaders = parseCustomHeaders(Option.getOrElse(yield* envValue("INFISICAL_CUSTOM_HEADERS"), () => ""))
    const api = apiClientFor(yield* HttpClient.HttpClient, apiUrl, customHeaders)
    yield* Effect.logInfo("Enrolling relay with enrollment token...")
    const login = yield* loginWithEnrollmentToken(api, token.value).pipe(
      Effect.catchAll((e) => fail(e.message, "enrollment failed"))
    )
    const at = yield* onHost
    yield* writeRelayState(at(stateFilePath(name)), [
      [StateKeys.accessToken, Redacted.value(login.accessToken)],
      ...(domain === undefined ? [] : [[StateKeys.domain, domain] as const])
    ]).pipe(Effect.catchAll((e) => fail(`failed to save access token: ${e.message}`, "Failed to install relay systemd service")))
    yield* writeEnvFile(name, { _tag: "Token", domain }).pipe(
      Effect.catchAll((e) => fail(`failed to write environment file: ${e.message}`, "Failed to install relay systemd service"))
    )
    return yield* finalizeInstall(name, logFile)
  }

  if (enrollMethod === "aws") {
    yield* requireName
    const relayId = nonEmpty(options.relayId)
    if (Option.isNone(relayId)) return yield* fail("--relay-id is required when --enroll-method=aws")
    const logFile = yield* checkLogFile(options.logFile)
    yield* ensureNoLegacyConflict(name)
    yield* writeEnvFile(name, { _tag: "Aws", relayId: relayId.value, domain }).pipe(
      Effect.catchAll((e) => fail(`failed to write environment file: ${e.message}`, "Failed to install relay systemd service"))
    )
    return yield* finalizeInstall(name, logFile)
  }

  // Any other --enroll-method falls through to the type-based paths, as upstream.
  const type = Option.getOrElse(nonEmpty(options.type), () => "org")
  yield* requireName
  const host = nonEmpty(options.host)
  let secret: string
  if (type === "instance") {
    if (Option.isNone(host)) return yield* fail("--host flag is required for instance relays")
    const fromFlag = Option.filter(Option.map(options.relayAuthSecret, Redacted.value), (s) => s !== "")
    const value = Option.isSome(fromFlag) ? fromFlag : yield* envValue("INFISICAL_RELAY_AUTH_SECRET")
    if (Option.isNone(value)) {
      return yield* fail("--relay-auth-secret flag or INFISICAL_RELAY_AUTH_SECRET env must be set for instance relays")
    }
    secret = value.value
  } else {
    if (Option.isNone(host)) return yield* fail("--host flag is required")
    const fromFlag = Option.filter(Option.map(options.token, Redacted.value), (s) => s !== "")
    const value = Option.isSome(fromFlag) ? fromFlag : yield* envValue("INFISICAL_TOKEN")
    if (Option.isNone(value)) return yield* fail("--token flag or INFISICAL_TOKEN env must be set")
    secret = value.value
  }
  const logFile = yield* checkLogFile(options.logFile)
  yield* ensureNoLegacyConflict(name)
  yield* writeEnvFile(name, { _tag: "Typed", type, host: host.value, domain, secret }).pipe(
    Effect.catchAll((e) => fail(`failed to write environment file: ${e.message}`, "Failed to install relay systemd service"))
  )
  return yield* finalizeInstall(name, logFile)
})

/** `relay systemd uninstall [name]`: no name = the legacy `infisical-relay` service. */
export const uninstallRelayService = Effect.fn("relay.systemd.uninstall")(function* (nameArg: Option.Option<string>) {
  yield* checkPlatform("uninstallation")
  const fs = yield* FileSystem.FileSystem
  const host = yield* SystemdHost
  const at = yield* onHost
  const name = Option.getOrElse(nonEmpty(nameArg), () => "")
  const serviceName = name === "" ? LEGACY_SERVICE_NAME : name
  const envPath = name === "" ? LEGACY_CONFIG_PATH : envFilePath(name)
  const statePath = name === "" ? undefined : stateFilePath(name)
  const failed = (error: string) => fail(error, "Failed to uninstall relay systemd service")

  if (!(yield* fs.exists(at(unitPath(serviceName))).pipe(Effect.orElseSucceed(() => false)))) {
    return yield* failed(`no relay service found for '${serviceName}'`)
  }
  yield* host.systemctl(["stop", serviceName]).pipe(
    Effect.catchAll((e) => Effect.logWarning(`Failed to stop service: ${e.message}`))
  )
  yield* host.systemctl(["disable", serviceName]).pipe(
    Effect.catchAll((e) => Effect.logWarning(`Failed to disable service: ${e.message}`))
  )
  const remove = (p: string, what: string) =>
    fs.remove(at(p)).pipe(
      Effect.catchAll((e) =>
        e._tag === "SystemError" && e.reason === "NotFound" ? Effect.void : failed(`failed to remove ${what}: ${e.message}`)
      )
    )
  yield* remove(unitPath(serviceName), "systemd service file")
  yield* remove(envPath, "environment file")
  if (statePath !== undefined) yield* remove(statePath, "config file")
  yield* remove(logrotatePath(serviceName), "logrotate file")
  yield* host.systemctl(["daemon-reload"]).pipe(Effect.catchAll((e) => failed(`failed to reload systemd: ${e.message}`)))
  yield* Effect.logInfo(`Successfully uninstalled Infisical Relay systemd service '${serviceName}'`)
})
