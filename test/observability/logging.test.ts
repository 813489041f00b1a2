/**
 * Log formats: `json` is one object per line with stable field names (level, time, message and
 * the event's annotations); `plain` is upstream's console line without colours; secrets stay
 * redacted in both.
 */
import { Effect, Logger, Redacted } from "effect"
import { afterEach, describe, expect, it, vi } from "vitest"
import { makeLogger } from "../../src/observability/Logging.ts"

afterEach(() => vi.restoreAllMocks())

const capture = (format: "json" | "plain", effect: Effect.Effect<void>) => {
  const lines: Array<string> = []
  vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk))
    return true
  })
  Effect.runSync(effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, makeLogger(format, "stderr")))))
  vi.restoreAllMocks()
  return lines
}

const event = Effect.logInfo("Gateway (g-1) not connected").pipe(
  Effect.annotateLogs({ gatewayId: "g-1", org: "acme-7b0a", sessionId: 42, token: Redacted.make("TOPSECRET") })
)

describe("log formats", () => {
  it("json: one object per line with stable fields", () => {
    const lines = capture("json", event)
    expect(lines).toHaveLength(1)
    const record = JSON.parse(lines[0]!) as Record<string, unknown>
    expect(record).toMatchObject({ level: "info", message: "Gateway (g-1) not connected", gatewayId: "g-1", org: "acme-7b0a", sessionId: 42 })
    expect(typeof record.time).toBe("string")
    expect(lines[0]).not.toContain("TOPSECRET")
  })

  it("plain: timestamp, level tag, message, key=value fields, no colour", () => {
    const [line] = capture("plain", event)
    expect(line).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z INF Gateway \(g-1\) not connected .*gatewayId=g-1/)
    expect(line).not.toContain("\x1b[")
    expect(line).not.toContain("TOPSECRET")
  })
})
