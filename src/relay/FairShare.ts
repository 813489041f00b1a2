/**
 * Bandwidth fairness between orgs on a shared relay (deficit round robin over event-loop turns).
 *
 * Node already serves sockets round robin: each readable socket gets one read per event-loop turn.
 * That is fair per connection, not per tenant: an org with 64 bulk sessions gets 64 turns' worth of
 * bytes for every one that another org's single request gets, and every byte it moves lengthens the
 * turn the other org waits behind. So each org gets a lane, and a lane may move `quantumBytes` per
 * round (one event-loop turn, ended by setImmediate). Bytes moved are a lane's debt, and every round
 * pays one quantum back; a lane more than a quantum in debt while another org has moved bytes in
 * this round or the last one is throttled: its sessions pause their sources until the debt is
 * within a quantum again. Nothing is buffered by this: a paused TLS socket stops reading, a paused SSH channel
 * stops replenishing its window, and the gateway stops sending.
 *
 * An org alone on the relay is never throttled (work-conserving), so a single tenant keeps the full
 * throughput; the cost per chunk is a map-free counter update.
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
  /** The last round in which the lane moved bytes. */
  activeRound: number
  waiters: Array<() => void>
}

/** 256 KiB per org per turn: ~1 ms of crypto work on this class of machine, bounding what a bulk org adds to another org's latency. */
export const DEFAULT_QUANTUM_BYTES = 256 * 1024

export const makeFairShare = (options: { readonly quantumBytes?: number } = {}): FairShare => {
  const quantum = options.quantumBytes ?? DEFAULT_QUANTUM_BYTES
  const lanes = new Map<string, LaneState>()
  /** Lanes in debt (they moved bytes recently); each round pays back one quantum of each. */
  const indebted = new Set<LaneState>()
  const throttled = new Set<LaneState>()
  let round = 1
  let roundEnding = false
  /** Distinct orgs that moved bytes in this round and in the previous one, with the first of each. */
  let activeNow = 0
  let activeBefore = 0
  let firstNow: LaneState | undefined
  let firstBefore: LaneState | undefined

  /** Another org moved bytes in this round or the last one, or is throttled (it wants to move bytes). */
  const contendedFor = (lane: LaneState) =>
    activeNow > 1 || activeBefore > 1 || (activeBefore === 1 && firstBefore !== lane) ||
    throttled.size > (throttled.has(lane) ? 1 : 0)

  const scheduleRoundEnd = () => {
    if (roundEnding) return
    roundEnding = true
    setImmediate(endRound)
  }

  const endRound = () => {
    roundEnding = false
    round++
    activeBefore = activeNow
    firstBefore = firstNow
    activeNow = 0
    firstNow = undefined
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
    if (lane.activeRound !== round) {
      lane.activeRound = round
      if (activeNow++ === 0) firstNow = lane
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
        state = { org, sessions: 0, debt: 0, activeRound: 0, waiters: [] }
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
