/**
 * Helpers for the control-plane tests: the in-process Infisical control plane on a loopback port,
 * an in-process `relay start` (the real layer graph, real HTTP) with its logs captured, and waits
 * that resolve on what they wait for (a log line, a request) instead of sleeping.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, ConfigProvider, Effect, Exit, Fiber, HashMap, Inspectable, Layer, Logger, LogLevel, ManagedRuntime, Option, Redacted } from "effect"
import { relayLayer } from "../../src/App.ts"
import { startRelay } from "../../src/Cli.ts"
import type { StartFlags } from "../../src/cli/StartOptions.ts"
import * as ControlPlaneServer from "../../src/dev/ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane, type LoggedRequest, makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import { freePort, startFlags } from "../support/relayHarness.ts"

export { freePort, startFlags }

/** One set of CAs per test file: RSA key generation is the slow part. */
export const sharedAuthorities = makeAuthorities()

export interface ControlPlaneHandle {
  readonly url: string
  readonly apiUrl: string
  readonly cp: <A, E>(f: (cp: ControlPlaneServer.DevControlPlaneShape) => Effect.Effect<A, E>) => Promise<A>
  readonly requests: () => Promise<ReadonlyArray<LoggedRequest>>
  /** Where each relay host's TLS port really is (the backend dials it for heartbeats). */
  readonly tlsPorts: Map<string, number>
  readonly close: () => Promise<void>
}

export const startControlPlane = async (options: ControlPlaneServer.ServerOptions = {}): Promise<ControlPlaneHandle> => {
  const tlsPorts = new Map<string, number>()
  const runtime = ManagedRuntime.make(
    ControlPlaneServer.layer({
      authorities: sharedAuthorities,
      relayTlsAddress: (host) => ({ host: "127.0.0.1", port: tlsPorts.get(host) ?? 1 }),
      ...options
    }) as Layer.Layer<DevControlPlane | ControlPlaneEndpoint>
  )
  const { apiUrl, url } = await runtime.runPromise(ControlPlaneEndpoint)
  const cp: ControlPlaneHandle["cp"] = (f) => runtime.runPromise(Effect.flatMap(DevControlPlane, f))
  return {
    url,
    apiUrl,
    cp,
    requests: () => cp((c) => c.requests),
    tlsPorts,
    close: () => runtime.dispose()
  }
}

// ---------------------------------------------------------------------------------------------
// Captured logs

export interface CapturedLine {
  readonly level: string
  readonly message: string
  /** Message, annotations and cause, as one string: what a secret must never appear in. */
  readonly full: string
}

export class LogCapture {
  readonly lines: Array<CapturedLine> = []
  private waiters: Array<() => void> = []

  readonly logger = Logger.make<unknown, void>(({ annotations, cause, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    const text = parts.map((p) => (typeof p === "string" ? p : Inspectable.toStringUnknown(p, 0))).join(" ")
    const annotationText = [...HashMap.toEntries(annotations)].map(([k, v]) => `${k}=${Inspectable.toStringUnknown(v, 0)}`).join(" ")
    const causeText = Cause.isEmpty(cause) ? "" : Cause.pretty(cause, { renderErrorCause: true })
    this.lines.push({ level: logLevel.label, message: text, full: [text, annotationText, causeText].join(" ") })
    const waiting = this.waiters
    this.waiters = []
    for (const w of waiting) w()
  })

  /** Replace the default logger and log everything, debug included. */
  get layer(): Layer.Layer<never> {
    return Layer.merge(Logger.replace(Logger.defaultLogger, this.logger), Logger.minimumLogLevel(LogLevel.All))
  }

  messages(): ReadonlyArray<string> {
    return this.lines.map((l) => l.message)
  }

  text(): string {
    return this.lines.map((l) => l.full).join("\n")
  }

  /** Resolves with the first line (from `from` on) matching `re`; rejects after `timeoutMs`. */
  waitFor(re: RegExp, timeoutMs = 30_000, from = 0): Promise<CapturedLine> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const found = this.lines.slice(from).find((l) => re.test(l.message))
        if (found) {
          clearTimeout(timer)
          resolve(found)
          return true
        }
        this.waiters.push(() => void check())
        return false
      }
      const timer = setTimeout(
        () => reject(new Error(`timed out waiting for log ${re}; got:\n${this.messages().join("\n")}`)),
        timeoutMs
      )
      check()
    })
  }
}

// ---------------------------------------------------------------------------------------------
// In-process `relay start`

export interface InProcessRelay {
  readonly logs: LogCapture
  readonly tlsPort: number
  readonly sshPort: number
  readonly dir: string
  /** Resolves with the relay's exit once it stops (a startup failure, or after `stop`). */
  readonly exit: Promise<Exit.Exit<unknown, unknown>>
  readonly stop: () => Promise<Exit.Exit<unknown, unknown>>
}

export interface RelayRunOptions {
  /** `relay start` flags; ports, listen host and domain are filled in unless given. */
  readonly flags: Parameters<typeof startFlags>[0]
  /** The environment (ConfigProvider); HOME and INFISICAL_RELAY_STATE_DIR default to a temp dir. */
  readonly env?: Record<string, string>
  /** The relay's `--host` (also mapped to this relay's TLS port for the control plane's probes). */
  readonly host?: string
  /** A host the control plane dials for this relay without passing it as `--host` (v2 relays). */
  readonly tlsHost?: string
  readonly controlPlane: ControlPlaneHandle
  readonly dir?: string
}

export const runRelay = async (options: RelayRunOptions): Promise<InProcessRelay> => {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "relay-cp-test-"))
  const [sshPort, tlsPort] = [await freePort(), await freePort()]
  if (options.host !== undefined) options.controlPlane.tlsPorts.set(options.host, tlsPort)
  if (options.tlsHost !== undefined) options.controlPlane.tlsPorts.set(options.tlsHost, tlsPort)
  const logs = new LogCapture()
  const env = new Map(Object.entries({ HOME: dir, INFISICAL_RELAY_STATE_DIR: path.join(dir, "state"), ...options.env }))
  const plain = startFlags({
    domain: options.controlPlane.url,
    sshPort: String(sshPort),
    tlsPort: String(tlsPort),
    listenHost: "127.0.0.1",
    heartbeatRetryInterval: "50ms",
    ...(options.host === undefined ? {} : { host: options.host }),
    ...options.flags
  })
  // Secret flags are Redacted, as @effect/cli's Options.redacted gives them.
  const flags: StartFlags = {
    ...plain,
    token: Option.map(plain.token as Option.Option<unknown>, (v) => Redacted.make(String(v))),
    clientSecret: Option.map(plain.clientSecret as Option.Option<unknown>, (v) => Redacted.make(String(v))),
    jwt: Option.map(plain.jwt as Option.Option<unknown>, (v) => Redacted.make(String(v)))
  }
  const fiber = Effect.runFork(
    startRelay(flags, relayLayer).pipe(
      Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici, logs.layer)),
      Effect.withConfigProvider(ConfigProvider.fromMap(env))
    )
  )
  const exit = Effect.runPromise(Fiber.await(fiber))
  return {
    logs,
    tlsPort,
    sshPort,
    dir,
    exit,
    stop: () => Effect.runPromise(Fiber.interrupt(fiber))
  }
}

/** Wait until the relay logged `re`, failing early (with its cause) if the relay stopped. */
export const waitForRelayLog = async (relay: InProcessRelay, re: RegExp, timeoutMs = 30_000) => {
  let settled = false
  const stopped = relay.exit.then((exit): never => {
    if (settled) return undefined as never
    throw new Error(`relay stopped before logging ${re}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "success"}\n${relay.logs.messages().join("\n")}`)
  })
  try {
    return await Promise.race([relay.logs.waitFor(re, timeoutMs), stopped])
  } finally {
    settled = true
  }
}

/** The requests whose path ends with `suffix`. */
export const requestsTo = (requests: ReadonlyArray<LoggedRequest>, suffix: string) =>
  requests.filter((r) => r.path.endsWith(suffix))
