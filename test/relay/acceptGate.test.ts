/**
 * The accept-rate token buckets (src/relay/AcceptGate.ts): burst, refill, per-address independence,
 * and a bounded map whatever the number of source addresses.
 */
import { describe, expect, it } from "vitest"
import { AcceptRateLimiter } from "../../src/relay/AcceptGate.ts"

describe("AcceptRateLimiter", () => {
  it("admits a burst of twice the rate, then refills at the rate", () => {
    const r = new AcceptRateLimiter()
    const t0 = 1_000_000
    const admitted = Array.from({ length: 15 }, () => r.take("10.0.0.1", 5, t0)).filter(Boolean).length
    expect(admitted).toBe(10)
    expect(r.take("10.0.0.1", 5, t0 + 100)).toBe(false) // 0.5 token
    expect(r.take("10.0.0.1", 5, t0 + 200)).toBe(true) // 1 token
    expect(r.take("10.0.0.1", 5, t0 + 200)).toBe(false)
    // Another address has its own bucket.
    expect(r.take("10.0.0.2", 5, t0 + 200)).toBe(true)
  })

  it("a rate of 0 admits everything and keeps no state", () => {
    const r = new AcceptRateLimiter()
    for (let i = 0; i < 1000; i++) expect(r.take(`10.0.${i >> 8}.${i & 255}`, 0)).toBe(true)
    expect(r.size).toBe(0)
  })

  it("drops buckets that have refilled, and never holds more than its cap", () => {
    const r = new AcceptRateLimiter(100)
    let t = 0
    // 10,000 addresses, one connection each, 1 ms apart: each bucket is full again 400 ms later.
    for (let i = 0; i < 10_000; i++) r.take(`a${i}`, 5, (t += 1))
    expect(r.size).toBeLessThanOrEqual(100)
    const idle = new AcceptRateLimiter()
    for (let i = 0; i < 10_000; i++) idle.take(`a${i}`, 5, (t += 1))
    // Only the addresses seen within one refill time (2 tokens / 5 per s = 0.4 s) can be held.
    expect(idle.size).toBeLessThanOrEqual(401)
    // A flood from one address keeps exactly one bucket.
    const flood = new AcceptRateLimiter()
    for (let i = 0; i < 10_000; i++) flood.take("10.9.9.9", 5, t)
    expect(flood.size).toBe(1)
  })
})
