/**
 * Admission at accept, before the relay reads or writes a byte of SSH or TLS:
 * - concurrent connections: Node's `server.maxConnections` (a connection over the cap is closed by
 *   Node before a socket object exists; its 'drop' event counts it), resized on every reload;
 * - accept rate: a token bucket per source address (rate per second, burst twice that).
 * A refused connection is closed at once with nothing written.
 */
import type * as net from "node:net"
import { Effect, FiberSet, Stream } from "effect"
import { Limits, type RelayLimits } from "./Limits.ts"
import { countConnectionRefused, type ListenerName, makeWarningThrottle } from "./Refusals.ts"

interface Bucket {
  tokens: number
  at: number
}

/**
 * Token buckets keyed by source address, bounded: a bucket that has refilled completely is the
 * same as no bucket, so each take drops the least recently used ones once they are full again;
 * and the map never holds more than `maxBuckets` (the least recently used goes first).
 */
export class AcceptRateLimiter {
  private readonly buckets = new Map<string, Bucket>()

  constructor(private readonly maxBuckets = 65_536) {}

  get size(): number {
    return this.buckets.size
  }

  /** Take one token for `address`; false when its bucket is empty. A rate of 0 admits everything. */
  take(address: string, ratePerSecond: number, now = Date.now()): boolean {
    if (ratePerSecond <= 0) return true
    const capacity = 2 * ratePerSecond
    const refill = (b: Bucket) => Math.min(capacity, b.tokens + ((now - b.at) / 1000) * ratePerSecond)
    const bucket = this.buckets.get(address)
    let tokens = capacity
    if (bucket !== undefined) {
      tokens = refill(bucket)
      // Re-inserted below: Map order is then least recently used first.
      this.buckets.delete(address)
    }
    this.sweep(capacity, refill)
    const admitted = tokens >= 1
    this.buckets.set(address, { tokens: admitted ? tokens - 1 : tokens, at: now })
    return admitted
  }

  private sweep(capacity: number, refill: (b: Bucket) => number): void {
    // Two oldest per take: amortized, the map shrinks faster than one new address can grow it.
    for (let i = 0; i < 2; i++) {
      const oldest = this.buckets.entries().next()
      if (oldest.done === true) return
      const [address, bucket] = oldest.value
      if (refill(bucket) < capacity && this.buckets.size < this.maxBuckets) return
      this.buckets.delete(address)
    }
  }
}

const connectionCap = (listener: ListenerName, limits: RelayLimits) =>
  listener === "ssh" ? limits.maxSshConnections : limits.maxTlsConnections

const acceptRate = (listener: ListenerName, limits: RelayLimits) =>
  listener === "ssh" ? limits.sshAcceptRate : limits.tlsAcceptRate

/**
 * Put `server` under the limits of `listener` for as long as the scope is open. Returns `admit`,
 * to call first thing for each accepted socket: false means the socket was refused and closed.
 */
export const makeAcceptGate = (server: net.Server, listener: ListenerName) =>
  Effect.gen(function* () {
    const limits = yield* Limits
    const rates = new AcceptRateLimiter()
    const warnDue = makeWarningThrottle()
    const log = yield* FiberSet.makeRuntime<never>()
    const warn = (reason: "max_connections" | "accept_rate", detail: string) => {
      if (!warnDue(reason)) return
      log(
        Effect.logWarning(`${listener.toUpperCase()} connections refused: ${detail}; further refusals are counted, not logged`).pipe(
          Effect.annotateLogs({ listener, reason })
        )
      )
    }
    // Node closes a connection over the cap before it becomes a socket; 0 means no cap.
    server.maxConnections = connectionCap(listener, limits.current())
    yield* limits.changes.pipe(
      Stream.runForEach((l) => Effect.sync(() => (server.maxConnections = connectionCap(listener, l)))),
      Effect.forkScoped,
      Effect.interruptible
    )
    server.on("drop", () => {
      countConnectionRefused(listener, "max_connections")
      warn("max_connections", `--max-${listener}-connections (${connectionCap(listener, limits.current())}) reached`)
    })
    return (socket: net.Socket): boolean => {
      const address = socket.remoteAddress ?? ""
      if (rates.take(address, acceptRate(listener, limits.current()))) return true
      socket.destroy()
      countConnectionRefused(listener, "accept_rate")
      warn("accept_rate", `--${listener}-accept-rate exceeded by ${address}`)
      return false
    }
  })
