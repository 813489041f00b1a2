/**
 * Logs as upstream prints them (stderr by default, zerolog-style console lines), or plain, or one
 * JSON object per line with stable field names. Context goes in log annotations, never in the
 * message, so every format carries the same fields.
 */
import { Cause, HashMap, Inspectable, Layer, List, Logger, LogLevel } from "effect"

export const logFormats = ["console", "plain", "json"] as const
export type LogFormat = (typeof logFormats)[number]
export const logDestinations = ["stderr", "stdout"] as const
export type LogDestination = (typeof logDestinations)[number]
export const logLevelNames = ["trace", "debug", "info", "warn", "error", "fatal"] as const
export type LogLevelName = (typeof logLevelNames)[number]

export interface LoggingOptions {
  readonly level: LogLevelName
  readonly format: LogFormat
  readonly destination: LogDestination
}

export const toLogLevel = (name: LogLevelName): LogLevel.LogLevel => {
  switch (name) {
    case "trace":
      return LogLevel.Trace
    case "debug":
      return LogLevel.Debug
    case "info":
      return LogLevel.Info
    case "warn":
      return LogLevel.Warning
    case "error":
      return LogLevel.Error
    case "fatal":
      return LogLevel.Fatal
  }
}

/** zerolog's three-letter level tags. */
const shortLevel = (level: LogLevel.LogLevel): string => {
  switch (level._tag) {
    case "Trace":
      return "TRC"
    case "Debug":
      return "DBG"
    case "Info":
      return "INF"
    case "Warning":
      return "WRN"
    case "Error":
      return "ERR"
    case "Fatal":
      return "FTL"
    default:
      return "???"
  }
}

const jsonLevel = (level: LogLevel.LogLevel): string =>
  level._tag === "Warning" ? "warn" : level._tag.toLowerCase()

const colorOf = (level: LogLevel.LogLevel): string =>
  level._tag === "Error" || level._tag === "Fatal" ? "\x1b[31m" : level._tag === "Warning" ? "\x1b[33m" : level._tag === "Info" ? "\x1b[32m" : "\x1b[90m"

const messageText = (message: unknown): string => {
  const parts = Array.isArray(message) ? message : [message]
  return parts.map((p) => (typeof p === "string" ? p : Inspectable.toStringUnknown(p, 0))).join(" ")
}

const fieldText = (value: unknown): string => {
  const s = typeof value === "string" ? value : Inspectable.toStringUnknown(value, 0)
  return /[\s"=]/.test(s) ? JSON.stringify(s) : s
}

const write = (destination: LogDestination) => {
  const stream = destination === "stdout" ? process.stdout : process.stderr
  return (line: string) => {
    stream.write(line + "\n")
  }
}

export const makeLogger = (format: LogFormat, destination: LogDestination): Logger.Logger<unknown, void> => {
  const out = write(destination)
  const color = format === "console" && (destination === "stdout" ? process.stdout : process.stderr).isTTY === true
  return Logger.make(({ annotations, cause, date, logLevel, message, spans }) => {
    const fields: Array<[string, unknown]> = []
    for (const [k, v] of HashMap.toEntries(annotations)) fields.push([k, v])
    for (const span of List.toArray(spans)) fields.push([span.label, `${date.getTime() - span.startTime}ms`])
    if (!Cause.isEmpty(cause)) fields.push(["error", Cause.pretty(cause, { renderErrorCause: true })])
    const text = messageText(message)
    if (format === "json") {
      const record: Record<string, unknown> = { level: jsonLevel(logLevel), time: date.toISOString(), message: text }
      for (const [k, v] of fields) record[k] = typeof v === "object" && v !== null ? Inspectable.toJSON(v) : v
      out(JSON.stringify(record))
      return
    }
    const level = shortLevel(logLevel)
    const head = color ? `\x1b[90m${date.toISOString()}\x1b[0m ${colorOf(logLevel)}${level}\x1b[0m` : `${date.toISOString()} ${level}`
    const tail = fields.map(([k, v]) => (color ? `\x1b[36m${k}=\x1b[0m${fieldText(v)}` : `${k}=${fieldText(v)}`))
    out([head, text, ...tail].join(" "))
  })
}

/** Replace the default logger and set the minimum level. */
export const LoggingLive = (options: LoggingOptions) =>
  Layer.merge(
    Logger.replace(Logger.defaultLogger, makeLogger(options.format, options.destination)),
    Logger.minimumLogLevel(toLogLevel(options.level))
  )
