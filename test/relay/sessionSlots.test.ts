/**
 * SessionSlots (src/relay/SessionSlots.ts): the session caps and the fair-share rule between
 * organisations, as pure accounting.
 */
import { describe, expect, it } from "vitest"
import { SessionSlots, type SlotLimits } from "../../src/relay/SessionSlots.ts"

const limits = (o: Partial<SlotLimits> = {}): SlotLimits => ({ maxSessions: 100, maxSessionsPerGateway: 100, maxSessionsPerOrg: 100, ...o })

/** Acquire `n` slots for org/gateway; each must succeed. */
const fill = (slots: SessionSlots, n: number, org: string, gateway: string, l: SlotLimits) => {
  for (let i = 0; i < n; i++) expect(slots.acquire(org, gateway, l)).toBeUndefined()
}

describe("SessionSlots", () => {
  it("refuses exactly the excess over each cap, and frees a slot on release", () => {
    const slots = new SessionSlots()
    const l = limits({ maxSessions: 5, maxSessionsPerGateway: 3, maxSessionsPerOrg: 4 })
    fill(slots, 3, "a", "gw1", l)
    expect(slots.acquire("a", "gw1", l)).toBe("max_sessions_per_gateway")
    fill(slots, 1, "a", "gw2", l)
    expect(slots.acquire("a", "gw2", l)).toBe("max_sessions_per_org")
    fill(slots, 1, "b", "gw2", l)
    expect(slots.size).toBe(5)
    expect(slots.acquire("b", "gw3", l)).toBe("max_sessions")
    slots.release("a", "gw1")
    expect(slots.acquire("b", "gw3", l)).toBeUndefined()
    expect(slots.heldBy("a")).toBe(3)
    expect(slots.heldBy("b")).toBe(2)
  })

  it("0 means no limit", () => {
    const slots = new SessionSlots()
    fill(slots, 1000, "a", "gw", limits({ maxSessions: 0, maxSessionsPerGateway: 0, maxSessionsPerOrg: 0 }))
    expect(slots.size).toBe(1000)
  })

  it("fair share: from 90% occupancy an org holding max/orgs is refused, a smaller org still gets the last slots", () => {
    const slots = new SessionSlots()
    const l = limits({ maxSessions: 10 })
    fill(slots, 8, "big", "gw1", l) // 80%: no fair-share check yet
    fill(slots, 1, "small", "gw2", l) // 90% now
    // Two orgs live: a share is 10 / 2 = 5; "big" holds 8.
    expect(slots.acquire("big", "gw1", l)).toBe("org_fair_share")
    expect(slots.acquire("small", "gw2", l)).toBeUndefined()
    expect(slots.acquire("small", "gw2", l)).toBe("max_sessions")
  })

  it("fair share counts a newcomer among the orgs, and a lone org may use every slot", () => {
    const alone = new SessionSlots()
    fill(alone, 10, "only", "gw", limits({ maxSessions: 10 })) // past 90%, but alone: its share is everything
    expect(alone.acquire("only", "gw", limits({ maxSessions: 10 }))).toBe("max_sessions")

    const slots = new SessionSlots()
    const l = limits({ maxSessions: 20 })
    fill(slots, 17, "big", "gw1", l)
    fill(slots, 1, "small", "gw2", l) // 90%
    // Two orgs live: share 20 / 2 = 10, "big" holds 17.
    expect(slots.acquire("big", "gw1", l)).toBe("org_fair_share")
    // A newcomer counts itself: share 20 / 3, it holds nothing.
    expect(slots.acquire("new", "gw3", l)).toBeUndefined()
    expect(slots.acquire("new", "gw3", l)).toBeUndefined()
    expect(slots.acquire("new", "gw3", l)).toBe("max_sessions")
  })

  it("forgets orgs and gateways with no live session (bounded by live sessions)", () => {
    const slots = new SessionSlots()
    const l = limits({ maxSessions: 0 })
    for (let i = 0; i < 1000; i++) {
      expect(slots.acquire(`org-${i}`, `gw-${i}`, l)).toBeUndefined()
      slots.release(`org-${i}`, `gw-${i}`)
    }
    expect(slots.size).toBe(0)
    expect(slots.heldBy("org-1")).toBe(0)
    // Fair share is computed over live orgs only: a fresh org alone may take every slot.
    fill(slots, 10, "later", "gw", limits({ maxSessions: 10 }))
  })
})
