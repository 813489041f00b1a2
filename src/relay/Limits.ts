/**
 * The relay's admission limits (issue #7): their shape and defaults, how flags, env and the limits
 * file spell them, and the `Limits` service holding the value in force. Every check reads the live
 * value, so a reload (SIGHUP, src/relay/LimitsReload.ts) applies to the next connection or session;
 * connections already admitted are never closed because a cap went down.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { Context, Data, Duration, Effect, Either, ParseResult, Schema, type Stream, SubscriptionRef } from "effect"
import { parseDuration } from "../cli/duration.ts"

export interface RelayLimits {
  /** Concurrent TCP connections on the SSH port, counted from accept (0 = no limit). */
  readonly maxSshConnections: number
  /** Concurrent TCP connections on the TLS port, counted from accept (0 = no limit). */
  readonly maxTlsConnections: number
  /** New SSH connections per second per source address, burst twice that (0 = off). */
  readonly sshAcceptRate: number
  /** New TLS connections per second per source address, burst twice that (0 = off). */
  readonly tlsAcceptRate: number
  /** From accept until the gateway is authenticated (version exchange, key exchange, userauth). */
  readonly sshHandshakeTimeout: Duration.Duration
  /** From accept until the TLS handshake completes. */
  readonly tlsHandshakeTimeout: Duration.Duration
  /** Authenticated gateway tunnels (0 = no limit). */
  readonly maxTunnels: number
  /** Live routed sessions (0 = no limit). */
  readonly maxSessions: number
  readonly maxSessionsPerGateway: number
  readonly maxSessionsPerOrg: number
  /** SSH channel slots per gateway connection, closing channels included (0 = no limit). */
  readonly maxChannelsPerTunnel: number
  /** A session with no byte either way for this long is closed (zero = off). */
  readonly sessionIdleTimeout: Duration.Duration
  /** Close a tunnel when its gateway's user certificate expires. */
  readonly disconnectExpiredTunnels: boolean
  /** Share bandwidth fairly between organisations (consumed by the pump). */
  readonly fairShare: boolean
}

export const defaultRelayLimits: RelayLimits = {
  maxSshConnections: 10_000,
  maxTlsConnections: 20_000,
  sshAcceptRate: 20,
  tlsAcceptRate: 500,
  sshHandshakeTimeout: Duration.seconds(20),
  tlsHandshakeTimeout: Duration.seconds(5),
  maxTunnels: 10_000,
  maxSessions: 50_000,
  maxSessionsPerGateway: 2_000,
  maxSessionsPerOrg: 10_000,
  maxChannelsPerTunnel: 4_096,
  sessionIdleTimeout: Duration.zero,
  disconnectExpiredTunnels: false,
  fairShare: true
}

/** 0 means "no limit" for every count. */
export const capOf = (limit: number): number => (limit === 0 ? Number.POSITIVE_INFINITY : limit)

// -------------------------------------------------------------------------------------------------
// How each limit is written

type Kind = "count" | "rate" | "timeout" | "optionalTimeout" | "boolean"

export interface LimitSpec {
  readonly field: keyof RelayLimits
  /** Flag name without dashes; also the key in the limits file. */
  readonly flag: string
  readonly kind: Kind
  readonly help: string
}

export const limitSpecs: ReadonlyArray<LimitSpec> = [
  { field: "maxSshConnections", flag: "max-ssh-connections", kind: "count", help: "Concurrent TCP connections on the SSH port" },
  { field: "maxTlsConnections", flag: "max-tls-connections", kind: "count", help: "Concurrent TCP connections on the TLS port" },
  { field: "sshAcceptRate", flag: "ssh-accept-rate", kind: "rate", help: "New SSH connections per second per source IP, burst 2x" },
  { field: "tlsAcceptRate", flag: "tls-accept-rate", kind: "rate", help: "New TLS connections per second per source IP, burst 2x" },
  { field: "sshHandshakeTimeout", flag: "ssh-handshake-timeout", kind: "timeout", help: "From accept until a gateway is authenticated" },
  { field: "tlsHandshakeTimeout", flag: "tls-handshake-timeout", kind: "timeout", help: "From accept until the TLS handshake completes" },
  { field: "maxTunnels", flag: "max-tunnels", kind: "count", help: "Authenticated gateway tunnels" },
  { field: "maxSessions", flag: "max-sessions", kind: "count", help: "Live sessions" },
  { field: "maxSessionsPerGateway", flag: "max-sessions-per-gateway", kind: "count", help: "Live sessions per gateway" },
  { field: "maxSessionsPerOrg", flag: "max-sessions-per-org", kind: "count", help: "Live sessions per organisation (client certificate O)" },
  { field: "maxChannelsPerTunnel", flag: "max-channels-per-tunnel", kind: "count", help: "SSH channels per gateway connection, closing ones included" },
  { field: "sessionIdleTimeout", flag: "session-idle-timeout", kind: "optionalTimeout", help: "Close a session with no byte either way for this long" },
  { field: "disconnectExpiredTunnels", flag: "disconnect-expired-tunnels", kind: "boolean", help: "Close a tunnel when its gateway certificate expires" },
  { field: "fairShare", flag: "fair-share", kind: "boolean", help: "Share bandwidth fairly between organisations" }
]

/** INFISICAL_RELAY_ + the flag in upper snake case. */
export const envNameOf = (spec: LimitSpec): string => `INFISICAL_RELAY_${spec.flag.toUpperCase().replace(/-/g, "_")}`

const expected: Record<Kind, string> = {
  count: "a whole number (0 = no limit)",
  rate: "a number of connections per second (0 = off)",
  timeout: "a duration such as 500ms, 5s or 1m",
  optionalTimeout: "a duration such as 30s or 5m (0 = off)",
  boolean: "true or false"
}

const formatValue = (value: RelayLimits[keyof RelayLimits]): string =>
  Duration.isDuration(value) ? (Duration.toMillis(value) === 0 ? "0" : Duration.format(value)) : String(value)

/** The `--help` text of a limit's flag: what it does, its env variable and its default. */
export const limitHelp = (spec: LimitSpec): string =>
  `${spec.help} (env ${envNameOf(spec)}, default ${formatValue(defaultRelayLimits[spec.field])}; ${expected[spec.kind]}).`

/** A limit's value from flag or env text; Left(what was expected) when invalid. */
export const parseLimitText = (spec: LimitSpec, raw: string): Either.Either<RelayLimits[keyof RelayLimits], string> => {
  const text = raw.trim()
  const value = ((): RelayLimits[keyof RelayLimits] | undefined => {
    switch (spec.kind) {
      case "count":
        return /^\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : undefined
      case "rate":
        return /^\d+(\.\d+)?$/.test(text) ? Number(text) : undefined
      case "timeout":
        return parseDuration(text)
      case "optionalTimeout":
        return parseDuration(text, { allowZero: true })
      case "boolean":
        return text === "true" ? true : text === "false" ? false : undefined
    }
  })()
  return value === undefined ? Either.left(expected[spec.kind]) : Either.right(value)
}

// -------------------------------------------------------------------------------------------------
// The limits file: a JSON object keyed by flag names, overriding flags and env

const DurationText = (allowZero: boolean) =>
  Schema.transformOrFail(Schema.String, Schema.DurationFromSelf, {
    strict: true,
    decode: (text, _, ast) => {
      const parsed = parseDuration(text, { allowZero })
      return parsed === undefined
        ? ParseResult.fail(new ParseResult.Type(ast, text, `expected ${expected[allowZero ? "optionalTimeout" : "timeout"]}`))
        : ParseResult.succeed(parsed)
    },
    encode: (d) => ParseResult.succeed(formatValue(d))
  })

/** One message per bad value, whichever part of the schema refused it. */
const expecting = (kind: Kind) => ({ message: () => ({ message: `expected ${expected[kind]}`, override: true }) })

const fileSchemaOf: Record<Kind, Schema.Schema<any, any>> = {
  count: Schema.NonNegativeInt.annotations(expecting("count")),
  rate: Schema.NonNegative.pipe(Schema.finite()).annotations(expecting("rate")),
  timeout: DurationText(false).annotations(expecting("timeout")),
  optionalTimeout: DurationText(true).annotations(expecting("optionalTimeout")),
  boolean: Schema.Boolean.annotations(expecting("boolean"))
}

/** The limits file: every key optional, unknown keys refused (a typo must not pass silently). */
export const LimitsFile = Schema.Struct(
  Object.fromEntries(limitSpecs.map((s) => [s.flag, Schema.optionalWith(fileSchemaOf[s.kind], { exact: true })]))
) as unknown as Schema.Schema<Partial<Record<string, RelayLimits[keyof RelayLimits]>>, Record<string, unknown>>

export class LimitsFileError extends Data.TaggedError("LimitsFileError")<{
  readonly path: string
  readonly detail: string
}> {
  override get message(): string {
    return `invalid limits file ${this.path}: ${this.detail}`
  }
}

/** `base` with the file's values applied. */
export const applyLimitsFile = (base: RelayLimits, file: Partial<Record<string, RelayLimits[keyof RelayLimits]>>): RelayLimits => {
  const next: Record<string, unknown> = { ...base }
  for (const spec of limitSpecs) {
    const value = file[spec.flag]
    if (value !== undefined) next[spec.field] = value
  }
  return next as unknown as RelayLimits
}

/** Read and validate the limits file, applied over `base` (flags, env, defaults). */
export const readLimitsFile = (path: string, base: RelayLimits) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError((e) => new LimitsFileError({ path, detail: e.message }))
    )
    const json = yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: (e) => new LimitsFileError({ path, detail: `not JSON: ${e instanceof Error ? e.message : String(e)}` })
    })
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      return yield* new LimitsFileError({ path, detail: "expected a JSON object keyed by flag names" })
    }
    const decoded = Schema.decodeUnknownEither(LimitsFile, { onExcessProperty: "error", errors: "all" })(json)
    if (Either.isLeft(decoded)) {
      const issues = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)
      const detail = issues
        .map((i) => (i.path.length > 0 ? `${i.path.join(".")}: ${i.message.replace(/^is unexpected.*/, "unknown limit")}` : i.message))
        .join("; ")
      return yield* new LimitsFileError({ path, detail })
    }
    return applyLimitsFile(base, decoded.right)
  })

/** Where the limits come from, so that a reload can recompute them. */
export interface LimitsSource {
  /** Defaults, overridden by env, overridden by flags. */
  readonly base: RelayLimits
  /** The limits file (`--limits-file`), re-read on SIGHUP. */
  readonly file: string | undefined
  /** `base` with the file applied, as read at start. */
  readonly initial: RelayLimits
}

export const defaultLimitsSource: LimitsSource = { base: defaultRelayLimits, file: undefined, initial: defaultRelayLimits }

/** `flag=value` for every limit, for the start-up log line. */
export const describeLimits = (limits: RelayLimits): string =>
  limitSpecs.map((s) => `${s.flag}=${formatValue(limits[s.field])}`).join(" ")

/** `flag: old -> new` for every limit that differs. */
export const changedLimits = (before: RelayLimits, after: RelayLimits): ReadonlyArray<string> =>
  limitSpecs
    .filter((s) => formatValue(before[s.field]) !== formatValue(after[s.field]))
    .map((s) => `${s.flag}: ${formatValue(before[s.field])} -> ${formatValue(after[s.field])}`)

// -------------------------------------------------------------------------------------------------
// The service

export interface LimitsShape {
  /** The limits in force now; synchronous, for the accept path (no fiber per connection). */
  readonly current: () => RelayLimits
  readonly get: Effect.Effect<RelayLimits>
  readonly set: (next: RelayLimits) => Effect.Effect<void>
  /** The current value, then every change (listeners resize Node's connection caps). */
  readonly changes: Stream.Stream<RelayLimits>
}

export const makeLimits = (initial: RelayLimits): Effect.Effect<LimitsShape> =>
  Effect.map(SubscriptionRef.make(initial), (ref) => {
    let now = initial
    return {
      current: () => now,
      get: SubscriptionRef.get(ref),
      set: (next) =>
        SubscriptionRef.set(ref, next).pipe(
          Effect.tap(() => {
            now = next
          })
        ),
      changes: ref.changes
    }
  })

/**
 * The limits in force. `relay start` provides it from its flags (App.ts); a layer built without
 * one (tests of other parts) runs with the defaults.
 */
export class Limits extends Context.Reference<Limits>()("relay/Limits", {
  defaultValue: (): LimitsShape => Effect.runSync(makeLimits(defaultRelayLimits))
}) {}
