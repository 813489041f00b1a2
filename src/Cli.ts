/**
 * The command tree of the real CLI: `infisical relay start`, `infisical relay systemd
 * install|uninstall [name]`. Parses flags, resolves RelayConfig, then runs the relay's layers.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Config, Duration, Effect, Layer, Option } from "effect"
import { relayLayer, startRelayLayers } from "./App.ts"
import { IdleGcLive } from "./runtime/IdleGc.ts"
import { parseListenAddress, resolveStartConfig, StartupError } from "./cli/resolveStartConfig.ts"
import { type StartFlags, startOptions } from "./cli/StartOptions.ts"
import { makeSystemdCommands } from "./cli/systemdCommands.ts"
import {
  type LogDestination,
  type LogFormat,
  type LoggingOptions,
  logDestinations,
  LoggingLive,
  logFormats,
  type LogLevelName,
  logLevelNames
} from "./observability/Logging.ts"
import type { RelayConfigShape } from "./RelayConfig.ts"

export const VERSION = "0.1.0"

/** Root flags, as upstream's persistent flags (env fallbacks LOG_LEVEL, LOG_FORMAT, LOG_DESTINATION). */
const rootOptions = {
  logLevel: Options.choice("log-level", [...logLevelNames, "warning"]).pipe(
    Options.withAlias("l"),
    Options.withFallbackConfig(Config.literal(...logLevelNames, "warning")("LOG_LEVEL")),
    Options.withDefault("info" as const),
    Options.withDescription("Log level: trace, debug, info, warn, error, fatal (env LOG_LEVEL, default info).")
  ),
  logFormat: Options.choice("log-format", logFormats).pipe(
    Options.withFallbackConfig(Config.literal(...logFormats)("LOG_FORMAT")),
    Options.withDefault("console" as const),
    Options.withDescription("Log format: console, plain or json (env LOG_FORMAT, default console).")
  ),
  logDestination: Options.choice("log-destination", logDestinations).pipe(
    Options.withFallbackConfig(Config.literal(...logDestinations)("LOG_DESTINATION")),
    Options.withDefault("stderr" as const),
    Options.withDescription("Where logs go: stderr or stdout (env LOG_DESTINATION, default stderr).")
  ),
  telemetry: Options.boolean("telemetry").pipe(
    Options.withDescription("Accepted for compatibility with the Infisical CLI; this relay sends no telemetry.")
  ),
  silent: Options.boolean("silent").pipe(
    Options.withDescription("Accepted for compatibility with the Infisical CLI.")
  )
}

const infisical = Command.make("infisical", rootOptions)

const loggingOf = (root: {
  readonly logLevel: LogLevelName | "warning"
  readonly logFormat: LogFormat
  readonly logDestination: LogDestination
}): LoggingOptions => ({
  level: root.logLevel === "warning" ? "warn" : root.logLevel,
  format: root.logFormat,
  destination: root.logDestination
})

/**
 * Run the relay until interrupted. A hard deadline backs the drain: if shutdown takes longer than
 * the drain timeout plus 10 s (a stuck finalizer), the process exits 1.
 */
export const runRelay = <E, R>(config: RelayConfigShape, layer: Layer.Layer<never, E, R>) => {
  let deadline: NodeJS.Timeout | undefined
  return Effect.scoped(
    Effect.gen(function* () {
      yield* startRelayLayers(config, layer)
      // Runs first at shutdown; cleared once shutdown has finished (a test process runs on).
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          deadline = setTimeout(() => process.exit(1), Duration.toMillis(config.drainTimeout) + 10_000).unref()
        })
      )
      return yield* Effect.never
    })
  ).pipe(Effect.ensuring(Effect.sync(() => clearTimeout(deadline))))
}

/** The `relay start` handler body, with the layer graph as a parameter so tests can swap it. */
export const startRelay = <E, R>(
  flags: StartFlags,
  makeLayer: (config: RelayConfigShape) => Layer.Layer<never, E, R>
) =>
  Effect.gen(function* () {
    const config = yield* resolveStartConfig(flags)
    return yield* runRelay(config, makeLayer(config))
  })

const start = Command.make("start", startOptions, (flags) =>
  Effect.gen(function* () {
    const root = yield* infisical
    // The process gives memory back when it goes quiet (src/runtime/IdleGc.ts); tests running many
    // relays in one process leave that to the process.
    const withIdleGc = (config: RelayConfigShape) => Layer.merge(relayLayer(config), IdleGcLive())
    return yield* startRelay(flags, withIdleGc).pipe(Effect.provide(LoggingLive(loggingOf(root))))
  })
).pipe(Command.withDescription("Start an Infisical relay"))

const { install, uninstall } = makeSystemdCommands<Command.Command.Context<"infisical">>((effect) =>
  Effect.flatMap(infisical, (root) => Effect.provide(effect, LoggingLive(loggingOf(root))))
)
const systemd = Command.make("systemd").pipe(
  Command.withDescription("Manage the relay's systemd service"),
  Command.withSubcommands([install, uninstall])
)

const dev = Command.make(
  "dev",
  {
    sshPort: Options.integer("ssh-port").pipe(Options.optional, Options.withDescription("SSH port (default: a free port).")),
    tlsPort: Options.integer("tls-port").pipe(Options.optional, Options.withDescription("TLS port (default: a free port).")),
    statusAddr: Options.text("status-addr").pipe(
      Options.optional,
      Options.withDescription("host:port of the status server (default: 127.0.0.1 and a free port).")
    ),
    transferMiB: Options.integer("transfer-mib").pipe(
      Options.withDefault(64),
      Options.withDescription("Size of the demo bulk transfer in MiB (default 64).")
    )
  },
  (options) =>
    Effect.gen(function* () {
      const root = yield* infisical
      // Loaded here, not at start-up: the dev control plane and its X.509 minting are not the relay.
      const { freePort, runDev } = yield* Effect.promise(() => import("./dev/DevCommand.ts"))
      const statusAddress = Option.isSome(options.statusAddr)
        ? parseListenAddress(options.statusAddr.value)
        : { host: "127.0.0.1", port: yield* freePort }
      if (!statusAddress) {
        return yield* new StartupError({ error: `invalid --status-addr "${Option.getOrElse(options.statusAddr, () => "")}": expected host:port`, messages: [] })
      }
      return yield* runDev({ ...options, statusAddress: Option.some(statusAddress) }).pipe(
        Effect.provide(LoggingLive(loggingOf(root)))
      )
    })
).pipe(
  Command.withDescription(
    "Run the relay against an embedded control plane with a demo gateway, and send traffic through it"
  )
)

const relay = Command.make("relay").pipe(
  Command.withDescription("Relay-related commands"),
  Command.withSubcommands([start, dev, systemd])
)

export const command = infisical.pipe(Command.withSubcommands([relay]))

export const cli = Command.run(command, { name: "infisical", version: VERSION })

/** Upstream's error printout: `error: <error>` then each message, on stderr. */
export const formatStartupError = (e: StartupError): string =>
  [`error: ${e.error}`, ...e.messages].join("\n") + "\n"

