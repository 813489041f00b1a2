import { Duration, Effect, ManagedRuntime } from "effect"
import { describe, expect, it } from "vitest"
import { defaultIdleGcSettings, IdleGcLive, shouldCollect } from "../../src/runtime/IdleGc.ts"
import { eventually } from "../support/relayHarness.ts"

const MiB = 1024 * 1024
const interval = 5_000_000

describe("idle GC decision", () => {
  const afterLastGc = { rss: 150 * MiB, js: 40 * MiB }
  it("collects when the process was idle and RSS grew past the threshold", () => {
    expect(shouldCollect(defaultIdleGcSettings, { cpuMicros: 20_000, intervalMicros: interval, now: { rss: 200 * MiB, js: 40 * MiB }, afterLastGc }))
      .toBe(true)
  })
  it("collects when the process was idle and its heap plus Buffers grew past the threshold, RSS flat", () => {
    expect(shouldCollect(defaultIdleGcSettings, { cpuMicros: 20_000, intervalMicros: interval, now: { rss: 150 * MiB, js: 50 * MiB }, afterLastGc }))
      .toBe(true)
  })
  it("leaves a busy process alone, however much it grew", () => {
    expect(shouldCollect(defaultIdleGcSettings, { cpuMicros: 500_000, intervalMicros: interval, now: { rss: 400 * MiB, js: 200 * MiB }, afterLastGc }))
      .toBe(false)
  })
  it("does not collect for small growth", () => {
    expect(shouldCollect(defaultIdleGcSettings, { cpuMicros: 0, intervalMicros: interval, now: { rss: 160 * MiB, js: 45 * MiB }, afterLastGc }))
      .toBe(false)
  })
})

describe("IdleGcLive", () => {
  it("returns the memory of dead buffers once the process is idle", async () => {
    const garbage = () => {
      const chunks: Array<Buffer> = []
      for (let i = 0; i < 96; i++) chunks.push(Buffer.allocUnsafe(MiB).fill(i))
      return chunks.length
    }
    garbage()
    const grown = process.memoryUsage.rss()
    const settings = { ...defaultIdleGcSettings, every: Duration.millis(200), idleCpuShare: 0.5 }
    // The layer's baseline is taken now, after the garbage: lower it as if the last GC was before.
    const runtime = ManagedRuntime.make(IdleGcLive({ ...settings, growthBytes: 0, jsGrowthBytes: 0 }))
    try {
      await runtime.runPromise(Effect.void)
      await eventually(() => process.memoryUsage.rss() < grown - 48 * MiB, "RSS dropped after an idle collection", 10_000)
    } finally {
      await runtime.dispose()
    }
  })
})
