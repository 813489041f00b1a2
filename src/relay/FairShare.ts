/**
 * Bandwidth fairness between orgs on a shared relay (deficit round robin over event-loop turns).
 *
 * Node already serves sockets round robin: each readable socket gets one read per event-loop turn.
 * That is fair per connection, not per tenant: an org with 64 bulk sessions gets 64 turns' worth of
 * bytes for every one that another org's single request gets, and every byte it moves lengthens the
 * turn the other org waits behind. So each org gets a lane, and a lane may move `quantumBytes` per
 * round (one event-loop turn, ended by setImmediate). Bytes moved are a lane's debt, and every round
 * pays one quantum back; a lane more than a quantum in debt while another org has moved bytes in
 * the last `activeWindowMs` (or is throttled) is throttled too: its sessions pause their sources
 * until the debt is within a quantum again. Nothing is buffered by this: a paused TLS socket stops
 * reading, a paused SSH channel stops replenishing its window, and the gateway stops sending.
 *
 * An org alone on the relay is never throttled (work-conserving), so a single tenant keeps the full
 * throughput; the cost per chunk is a clock read and a counter update.
 */

export interface Lane {
  /** Count `bytes` moved; false when the lane is over its quantum and must pause until `whenOpen`. */
  readonly charge: (bytes: number) => boolean
  /** Run `resume` once when the current round ends (only after `charge` returned false). */
  readonly whenOpen: (resume: () => void) => void
  /** The session using the lane has ended. */
  readonly release: () => void
}

export interface FairShare {
  /** The lane of `org` (shared by all its sessions) for one session. */
  readonly lane: (org: string) => Lane
  /** Orgs with at least one live session (for tests and metrics). */
  readonly orgs: () => number
}

interface LaneState {
  readonly org: string
  sessions: number
  /** Bytes moved and not yet paid back: each round pays back one quantum. */
  debt: number
  /** When the lane last moved bytes (ms). */
  lastActiveAt: number
  waiters: Array<() => void>
}

/** 256 KiB per org per turn: ~1 ms of crypto work on this class of machine, bounding what a bulk org adds to another org's latency. */
export const DEFAULT_QUANTUM_BYTES = 256 * 1024

/**
 * How recently another org must have moved bytes to count as competing. An interactive org moves
 * bytes in bursts a round trip apart, far more than one event-loop turn: counting only the current
 * turn would let a bulk org run unthrottled between another org's requests, and its long turns
 * would then delay each of them.
 */
export const DEFAULT_ACTIVE_WINDOW_MS = 100

export interface FairShareOptions {
  readonly quantumBytes?: number
  readonly activeWindowMs?: number
  /** The clock (ms); tests pass their own. */
  readonly now?: () => number
}

export const makeFairShare = (options: FairShareOptions = {}): FairShare => {
  const quantum = options.quantumBytes ?? DEFAULT_QUANTUM_BYTES
  const activeWindowMs = options.activeWindowMs ?? DEFAULT_ACTIVE_WINDOW_MS
  const now = options.now ?? Date.now
  const lanes = new Map<string, LaneState>()
  /** Lanes in debt (they moved bytes recently); each round pays back one quantum of each. */
  const indebted = new Set<LaneState>()
  const throttled = new Set<LaneState>()
  let roundEnding = false
  /** The last two distinct lanes that moved bytes, most recent first: enough to know whether another one did. */
  let latest: LaneState | undefined
  let previous: LaneState | undefined

  /** Another org moved bytes within the active window, or is throttled (it wants to move bytes). */
  const contendedFor = (lane: LaneState) => {
    const other = latest === lane ? previous : latest
    if (other !== undefined && lanes.get(other.org) === other && now() - other.lastActiveAt <= activeWindowMs) return true
    return throttled.size > (throttled.has(lane) ? 1 : 0)
  }

  const scheduleRoundEnd = () => {
    if (roundEnding) return
    roundEnding = true
    setImmediate(endRound)
  }

  const endRound = () => {
    roundEnding = false
    for (const lane of indebted) {
      lane.debt = Math.max(0, lane.debt - quantum)
      if (lane.debt === 0) indebted.delete(lane)
    }
    for (const lane of throttled) {
      // Reopen once the debt is within a quantum, or at once when nobody else is competing.
      if (lane.debt > quantum && contendedFor(lane)) continue
      throttled.delete(lane)
      const waiters = lane.waiters
      lane.waiters = []
      for (const resume of waiters) resume()
    }
    if (throttled.size > 0) scheduleRoundEnd()
  }

  const charge = (lane: LaneState, bytes: number): boolean => {
    lane.lastActiveAt = now()
    if (latest !== lane) {
      previous = latest
      latest = lane
    }
    lane.debt += bytes
    indebted.add(lane)
    scheduleRoundEnd()
    return lane.debt <= quantum || !contendedFor(lane)
  }

  return {
    lane: (org) => {
      let state = lanes.get(org)
      if (!state) {
        state = { org, sessions: 0, debt: 0, lastActiveAt: 0, waiters: [] }
        lanes.set(org, state)
      }
      state.sessions++
      const lane = state
      let released = false
      return {
        charge: (bytes) => charge(lane, bytes),
        whenOpen: (resume) => {
          throttled.add(lane)
          lane.waiters.push(resume)
          scheduleRoundEnd()
        },
        release: () => {
          if (released) return
          released = true
          if (--lane.sessions > 0) return
          if (lanes.get(lane.org) === lane) lanes.delete(lane.org)
          indebted.delete(lane)
          throttled.delete(lane)
        }
      }
    },
    orgs: () => lanes.size
  }
}
