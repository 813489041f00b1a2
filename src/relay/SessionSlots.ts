/**
 * Session slots: how many routed sessions are live, in total, per gateway and per organisation,
 * and whether one more may start.
 *
 * Fair sharing between organisations: once the relay is at 90% or more of --max-sessions, an
 * organisation that already holds at least max-sessions / (organisations with live sessions,
 * counting itself) is refused (`org_fair_share`), so the last slots go to the organisations that
 * hold fewer, not to whoever asks fastest.
 */
import { capOf, type RelayLimits } from "./Limits.ts"

export type SlotRefusal = "max_sessions" | "max_sessions_per_gateway" | "max_sessions_per_org" | "org_fair_share"

export type SlotLimits = Pick<RelayLimits, "maxSessions" | "maxSessionsPerGateway" | "maxSessionsPerOrg">

/** The share of global occupancy from which fair sharing applies. */
export const FAIR_SHARE_THRESHOLD = 0.9

export class SessionSlots {
  private total = 0
  private readonly byOrg = new Map<string, number>()
  private readonly byGateway = new Map<string, number>()

  get size(): number {
    return this.total
  }

  heldBy(org: string): number {
    return this.byOrg.get(org) ?? 0
  }

  /** Take a slot for a session of `org` to `gatewayId`, or say why not. */
  acquire(org: string, gatewayId: string, limits: SlotLimits): SlotRefusal | undefined {
    const max = capOf(limits.maxSessions)
    if (this.total >= max) return "max_sessions"
    if ((this.byGateway.get(gatewayId) ?? 0) >= capOf(limits.maxSessionsPerGateway)) return "max_sessions_per_gateway"
    const held = this.byOrg.get(org) ?? 0
    if (held >= capOf(limits.maxSessionsPerOrg)) return "max_sessions_per_org"
    if (this.total >= FAIR_SHARE_THRESHOLD * max) {
      const orgs = this.byOrg.size + (held === 0 ? 1 : 0)
      if (held >= max / orgs) return "org_fair_share"
    }
    this.total++
    this.byOrg.set(org, held + 1)
    this.byGateway.set(gatewayId, (this.byGateway.get(gatewayId) ?? 0) + 1)
    return undefined
  }

  /** Give back a slot taken by `acquire` (exactly once per successful acquire). */
  release(org: string, gatewayId: string): void {
    this.total--
    decrement(this.byOrg, org)
    decrement(this.byGateway, gatewayId)
  }
}

/** Maps hold only keys with live sessions: an idle org or gateway costs nothing. */
const decrement = (map: Map<string, number>, key: string) => {
  const n = (map.get(key) ?? 0) - 1
  if (n <= 0) map.delete(key)
  else map.set(key, n)
}
