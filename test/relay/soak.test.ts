/**
 * The soak's CI version: bench/lib/soakRun.ts (what `npm run soak` runs for minutes) for 45 s at a
 * lower scale, against an `infisical relay start` subprocess with Go gateway peers and
 * backend-style clients. It asserts the soak's own verdict: fds back to their count before the
 * load, no session left active or failed (except those a gateway restart cut), RSS not growing
 * faster than the bound over the second half.
 *
 * The RSS bound is loose for a run this short: V8 is still sizing its heap, and a 45 s run of the
 * tsx-loaded relay measured 35 MiB/min over its second half with no leak that fds or sessions
 * show. 60 MiB/min catches a leak of a whole session's state (~78 KiB a session, docs/load.md, x
 * 15 sessions/s = ~70 MiB/min), not slow growth; `npm run soak` checks 1 MiB/min over ten minutes
 * (and currently fails it: docs/load.md, Soak).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type LoadMaterial, makeLoadMaterial } from "../../bench/lib/loadMaterial.ts"
import { runSoak } from "../../bench/lib/soakRun.ts"
import { buildGoPeer } from "../support/goPeers.ts"

const SECONDS = 45
const CHURN_PER_SECOND = 15

describe("soak (CI version)", () => {
  let m: LoadMaterial
  let gatewayBin: string

  beforeAll(async () => {
    ;[m, gatewayBin] = await Promise.all([makeLoadMaterial(), buildGoPeer("gateway")])
  })
  afterAll(async () => {
    await m?.close()
  })

  it("churn, bulk and gateway restarts for 45 s leave no fds, sessions or memory growth behind", async () => {
    const result = await runSoak(m, {
      seconds: SECONDS,
      tunnels: 12,
      gatewayProcs: 3,
      churnPerSecond: CHURN_PER_SECOND,
      bulkSessions: 1,
      bulkBytesPerSecond: 1 << 20,
      reconnectEverySeconds: 10,
      sampleEverySeconds: 1,
      maxRssSlopeMiBPerMinute: 60,
      // Sampled without forcing a GC, over ~20 s: loose, it catches only a gross per-session leak.
      maxHeapSlopeMiBPerMinute: 30,
      fdSlack: 2,
      runner: { kind: "tsx" },
      gatewayBin
    })
    // The load really ran: sessions churned, the bulk session moved bytes, gateways restarted.
    expect(result.churn.ok).toBeGreaterThan(SECONDS * CHURN_PER_SECOND * 0.5)
    expect(result.bulkMiB).toBeGreaterThan(SECONDS * 0.5)
    expect(result.restarts).toBeGreaterThanOrEqual(3)
    expect(Math.max(...result.samples.map((s) => s.sessionsActive))).toBeGreaterThan(0)
    expect(result.failures).toEqual([])
    expect(result.passed).toBe(true)
  }, 240_000)
})
