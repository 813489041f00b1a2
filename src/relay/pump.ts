/**
 * The byte pump of one routed session (protocol.md §4.2 step 5): client -> gateway until the
 * client's EOF, then CHANNEL_EOF; gateway -> client until the channel's EOF, then the TLS side is
 * ended (close_notify) and both are closed. Either side failing closes both. Backpressure is
 * stream piping: a slow reader on one side stops reads on the other, never buffering without bound.
 */
import type { Duplex } from "node:stream"
import { Effect } from "effect"

export interface PumpResult {
  /** Bytes from the client to the gateway. */
  readonly bytesUp: number
  /** Bytes from the gateway to the client. */
  readonly bytesDown: number
  /** Why the session ended. */
  readonly reason: "completed" | "client-error" | "gateway-error" | "client-closed" | "gateway-closed"
}

export const pump = (client: Duplex, gateway: Duplex) =>
  Effect.async<PumpResult>((resume) => {
    let bytesUp = 0
    let bytesDown = 0
    let done = false
    const countUp = (chunk: Buffer) => {
      bytesUp += chunk.length
    }
    const countDown = (chunk: Buffer) => {
      bytesDown += chunk.length
    }
    const finish = (reason: PumpResult["reason"]) => {
      if (done) return
      done = true
      client.off("data", countUp)
      gateway.off("data", countDown)
      client.destroy()
      gateway.destroy()
      resume(Effect.succeed({ bytesUp, bytesDown, reason }))
    }
    client.on("data", countUp)
    gateway.on("data", countDown)
    client.pipe(gateway) // ends the channel (CHANNEL_EOF) at the client's EOF
    gateway.pipe(client) // ends the TLS side at the channel's EOF
    // The session is over once the gateway's side has ended and been written out to the client;
    // a channel that closes after its EOF is that normal end, not an abort.
    client.once("finish", () => finish("completed"))
    client.once("error", () => finish("client-error"))
    gateway.once("error", () => finish("gateway-error"))
    client.once("close", () => finish(client.writableFinished ? "completed" : "client-closed"))
    gateway.once("close", () => {
      if (!gateway.readableEnded) finish("gateway-closed")
    })
    return Effect.sync(() => {
      if (done) return
      done = true
      client.destroy()
      gateway.destroy()
    })
  })
