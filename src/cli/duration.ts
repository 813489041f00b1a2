/** Go-style durations as operators write them in flags, env and the limits file: `500ms`, `10s`, `30m`, `6h`. */
import { Duration } from "effect"

/**
 * Parse `<digits><ms|s|m|h>`; undefined when malformed. Zero is refused unless `allowZero` (then a
 * bare `0` is accepted too: "off" for timeouts that may be disabled).
 */
export const parseDuration = (raw: string, options: { readonly allowZero?: boolean } = {}): Duration.Duration | undefined => {
  const text = raw.trim()
  if (options.allowZero === true && text === "0") return Duration.zero
  const m = /^(\d+)(ms|s|m|h)$/.exec(text)
  if (!m) return undefined
  const n = Number(m[1])
  if (n === 0) return options.allowZero === true ? Duration.zero : undefined
  const unit = m[2] === "ms" ? "millis" : m[2] === "s" ? "seconds" : m[2] === "m" ? "minutes" : "hours"
  return Duration.decode(`${n} ${unit}`)
}
