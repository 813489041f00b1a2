/**
 * `infisical relay systemd install [name]` and `uninstall [name]` (protocol.md §1.2). The handlers
 * run against SystemdHost: the real machine unless the caller provides another (tests provide a
 * temporary root and a fake systemctl).
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as Path from "@effect/platform/Path"
import { Effect, Option } from "effect"
import { installRelayService, uninstallRelayService } from "../systemd/install.ts"
import { SystemdHost, SystemdHostLive } from "../systemd/SystemdHost.ts"

const text = (name: string, description: string) =>
  Options.text(name).pipe(Options.optional, Options.withDescription(description))

const secret = (name: string, description: string) =>
  Options.redacted(name).pipe(Options.optional, Options.withDescription(description))

const nameArg = Args.text({ name: "name" }).pipe(Args.optional, Args.withDescription("Relay name (also the service name)"))

export const installOptions = {
  name: nameArg,
  token: secret(
    "token",
    "One-time enrollment token with --enroll-method=token (or env INFISICAL_RELAY_ENROLLMENT_TOKEN); " +
      "machine-identity token for org relays (or env INFISICAL_TOKEN)."
  ),
  enrollMethod: text("enroll-method", "Relay auth method: token or aws."),
  relayId: text("relay-id", "Relay id (required with --enroll-method=aws)."),
  logFile: text("log-file", "Absolute path the service's logs are written to, e.g. /var/log/infisical/relay.log."),
  domain: text("domain", "Domain of your Infisical instance."),
  type: text("type", "Relay type: org or instance (default org)."),
  host: text("host", "IP or hostname of the relay (required for --type=instance)."),
  relayAuthSecret: secret(
    "relay-auth-secret",
    "Relay auth secret for --type=instance (or env INFISICAL_RELAY_AUTH_SECRET)."
  ),
  nameFlag: text("name", "Deprecated: give the name as the positional argument.")
} as const

/** What the handlers need from the platform (NodeContext + an HttpClient). */
export type SystemdCommandRequirements =
  | FileSystem.FileSystem
  | Path.Path
  | HttpClient.HttpClient
  | CommandExecutor.CommandExecutor

/** Use the SystemdHost in context, else the real machine. */
const onHost = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.serviceOption(SystemdHost), (host) =>
    Option.isSome(host)
      ? Effect.provideService(effect, SystemdHost, host.value)
      : Effect.provide(effect, SystemdHostLive))

/**
 * The two commands; `withLogging` wraps each handler (the root command's log flags).
 */
export const makeSystemdCommands = <X>(
  withLogging: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R | X>
) => {
  const install = Command.make("install", installOptions, (o) =>
    withLogging(onHost(installRelayService({
      name: o.name,
      nameFlag: o.nameFlag,
      token: o.token,
      enrollMethod: o.enrollMethod,
      relayId: o.relayId,
      logFile: o.logFile,
      domain: o.domain,
      type: o.type,
      host: o.host,
      relayAuthSecret: o.relayAuthSecret
    })))
  ).pipe(Command.withDescription("Install and enable the relay as a systemd service (requires sudo)"))

  const uninstall = Command.make("uninstall", { name: nameArg }, (o) => withLogging(onHost(uninstallRelayService(o.name))))
    .pipe(Command.withDescription("Stop, disable and remove the relay's systemd service (requires sudo)"))

  return { install, uninstall } as const
}
