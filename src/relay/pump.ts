/**
 * The byte pump of one routed session (protocol.md §4.2 step 5): client -> gateway until the
 * client's EOF, then CHANNEL_EOF; gateway -> client until the channel's EOF, then the TLS side is
 * ended (close_notify) and both are closed. Either side failing closes both.
 *
 * Back-pressure, never buffering: a source is paused while its destination's buffer is full, and
 * while the org's fair-share lane is throttled (FairShare.ts); a paused TLS socket stops reading,
 * a paused SSH channel stops replenishing the gateway's window.
 */
import type { Duplex } from "node:stream"
import { Effect } from "effect"
import type { FairShare, Lane } from "./FairShare.ts"

export interface PumpResult {
  /** Bytes from the client to the gateway. */
  readonly bytesUp: number
  /** Bytes from the gateway to the client. */
  readonly bytesDown: number
  /** Why the session ended. */
  readonly reason: "completed" | "client-error" | "gateway-error" | "client-closed" | "gateway-closed" | "idle-timeout"
}

export interface PumpOptions {
  /** The client certificate's org label: the fair-share lane the session's bytes count against. */
  readonly org?: string
  readonly gatewayId?: string
  /** Close the session after this long without a byte either way; 0 or absent = never. */
  readonly idleTimeoutMs?: number
  /** Share bandwidth fairly between orgs; absent = first come, first served. */
  readonly fairShare?: FairShare
}

/**
 * How much may wait in a destination's write buffer before its source is paused. Node's default
 * mark (16 KiB) is below one SSH channel packet (32 KiB): pausing at it stopped the channel after
 * every packet, one TLS write per event-loop turn, and left the whole window unread in the channel.
 * The SSH window still bounds what one session can hold (window + this).
 */
const PAUSE_ABOVE_BYTES = 1024 * 1024

/**
 * Forward `from` into `to` like `pipe` (end follows end), but with two reasons to pause the source:
 * the destination's buffer is full, or the lane is throttled. Resumes only when neither holds.
 */
const forward = (from: Duplex, to: Duplex, onChunk: (bytes: number) => void, lane: Lane | undefined) => {
  let awaitingDrain = false
  let throttled = false
  const resumeIfClear = () => {
    if (!awaitingDrain && !throttled && !to.destroyed) from.resume()
  }
  const onDrain = () => {
    awaitingDrain = false
    resumeIfClear()
  }
  const onOpen = () => {
    throttled = false
    resumeIfClear()
  }
  from.on("data", (chunk: Buffer) => {
    onChunk(chunk.length)
    // write() has returned false by the time the buffer is this full, so 'drain' will follow.
    if (!to.write(chunk) && to.writableLength > PAUSE_ABOVE_BYTES && !awaitingDrain) {
      awaitingDrain = true
      from.pause()
      to.once("drain", onDrain)
    }
    if (lane !== undefined && !throttled && !lane.charge(chunk.length)) {
      throttled = true
      from.pause()
      lane.whenOpen(onOpen)
    }
  })
  from.once("end", () => to.end())
}

/**
 * Start pumping between `client` and `gateway`; `onEnd` is called once with the outcome, after
 * both sides are destroyed. The returned function stops the pump early (both sides destroyed,
 * `onEnd` not called). Plain callbacks: the listener runs this once per session (Session.ts).
 */
export const startPump = (
  client: Duplex,
  gateway: Duplex,
  options: PumpOptions,
  onEnd: (result: PumpResult) => void
): (() => void) => {
  let bytesUp = 0
  let bytesDown = 0
  let lastActivity = Date.now()
  let done = false
  let idleTimer: NodeJS.Timeout | undefined
  const lane = options.fairShare?.lane(options.org ?? "")

  const stop = () => {
    if (done) return
    done = true
    if (idleTimer) clearTimeout(idleTimer)
    lane?.release()
    client.destroy()
    gateway.destroy()
  }
  const finish = (reason: PumpResult["reason"]) => {
    if (done) return
    stop()
    onEnd({ bytesUp, bytesDown, reason })
  }

  forward(client, gateway, (n) => {
    bytesUp += n
    lastActivity = Date.now()
  }, lane) // ends the channel (CHANNEL_EOF) at the client's EOF
  forward(gateway, client, (n) => {
    bytesDown += n
    lastActivity = Date.now()
  }, lane) // ends the TLS side at the channel's EOF

  const idleTimeoutMs = options.idleTimeoutMs ?? 0
  if (idleTimeoutMs > 0) {
    // One timer per session, re-armed for the remaining time rather than on every chunk.
    const check = () => {
      const idleFor = Date.now() - lastActivity
      if (idleFor >= idleTimeoutMs) return finish("idle-timeout")
      idleTimer = setTimeout(check, idleTimeoutMs - idleFor)
      idleTimer.unref()
    }
    idleTimer = setTimeout(check, idleTimeoutMs)
    idleTimer.unref()
  }

  // The session is over once the gateway's side has ended and been written out to the client;
  // a channel that closes after its EOF is that normal end, not an abort.
  client.once("finish", () => finish("completed"))
  client.once("error", () => finish("client-error"))
  gateway.once("error", () => finish("gateway-error"))
  client.once("close", () => finish(client.writableFinished ? "completed" : "client-closed"))
  gateway.once("close", () => {
    if (!gateway.readableEnded) finish("gateway-closed")
  })
  // Either side may be gone before the pump starts (a tunnel that died in the same read that
  // confirmed the channel): its 'close' has already been emitted, so look at its state.
  if (gateway.destroyed && !gateway.readableEnded) finish("gateway-closed")
  else if (client.destroyed) finish("client-closed")
  return stop
}

/** `startPump` as an Effect: succeeds with the outcome; interruption stops the pump. */
export const pump = (client: Duplex, gateway: Duplex, options: PumpOptions = {}) =>
  Effect.async<PumpResult>((resume) => {
    const stop = startPump(client, gateway, options, (result) => resume(Effect.succeed(result)))
    return Effect.sync(stop)
  })
