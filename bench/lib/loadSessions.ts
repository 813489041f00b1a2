/**
 * Client sessions of the load test and the soak, dialing like Infisical's backend: outer mTLS to
 * the relay with a relay-client certificate naming the gateway, then bytes to the gateway's
 * `-mode bench` handler through the relay's direct-tcpip channel ("ECHO\n": echo until EOF;
 * "SOURCE <n>\n": n bytes, then EOF).
 *
 * bench/lib/client.ts has the benchmark's variants of these; its targets carry inner-TLS contexts
 * these sessions never use, and they have no paced reader or reusable round trip.
 */
import { performance } from "node:perf_hooks"
import * as tls from "node:tls"

const HOST = "127.0.0.1"

/** Rejects after `ms` unless `p` settled; `onTimeout` tears down what `p` waits on. */
export const within = <A>(ms: number, what: string, p: Promise<A>, onTimeout: () => void = () => undefined): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        onTimeout()
        reject(new Error(`${what}: timed out after ${ms} ms`))
      }, ms)
    })
  ]).finally(() => clearTimeout(timer))
}

/** Outer TLS to the relay; resolves on secureConnect. */
export const dialRelay = (port: number, context: tls.SecureContext, timeoutMs = 30_000): Promise<tls.TLSSocket> => {
  const socket = tls.connect({ host: HOST, port, secureContext: context, minVersion: "TLSv1.2" })
  const connected = new Promise<tls.TLSSocket>((resolve, reject) => {
    socket.once("secureConnect", () => {
      socket.off("error", reject)
      resolve(socket)
    })
    socket.once("error", reject)
    socket.once("close", () => reject(new Error("closed during the TLS handshake")))
  })
  return within(timeoutMs, "TLS connect", connected, () => socket.destroy())
}

/** Writes `payload` and resolves with the ms until as many bytes came back (the echo handler). */
export const roundTrip = (socket: tls.TLSSocket, payload: Buffer, timeoutMs = 30_000): Promise<number> => {
  const start = performance.now()
  let got = 0
  let onData: (chunk: Buffer) => void = () => undefined
  let onClose: () => void = () => undefined
  const done = new Promise<number>((resolve, reject) => {
    onData = (chunk) => {
      got += chunk.length
      if (got >= payload.length) resolve(performance.now() - start)
    }
    onClose = () => reject(new Error(`session closed after ${got} of ${payload.length} echoed bytes`))
    socket.on("data", onData)
    socket.once("close", onClose)
    socket.write(payload)
  })
  return within(timeoutMs, "echo", done).finally(() => {
    socket.off("data", onData)
    socket.off("close", onClose)
  })
}

const PROBE = Buffer.from("x")

/**
 * A session routed through to the gateway's echo handler, proven end to end by one echoed byte,
 * then left open. Errors after that are swallowed (the caller closes or loses it).
 */
export const openEchoSession = async (port: number, context: tls.SecureContext, timeoutMs = 30_000): Promise<tls.TLSSocket> => {
  const socket = await dialRelay(port, context, timeoutMs)
  socket.on("error", () => undefined)
  try {
    socket.write("ECHO\n")
    await roundTrip(socket, PROBE, timeoutMs)
    return socket
  } catch (err) {
    socket.destroy()
    throw err
  }
}

/**
 * Downloads "SOURCE <n>" to EOF, counting bytes into `count` as they arrive. With `bytesPerSecond`
 * the reader is paced (the socket paused between reads), so the relay's flow control holds the
 * rest back. `stop()` on the returned handle ends the download early (resolves with what arrived).
 */
export const download = (
  port: number,
  context: tls.SecureContext,
  n: number,
  o: { readonly count?: (bytes: number) => void; readonly bytesPerSecond?: number } = {}
): { readonly done: Promise<number>; stop(): void } => {
  let socket: tls.TLSSocket | undefined
  let stopped = false
  const done = (async () => {
    socket = await dialRelay(port, context)
    if (stopped) socket.destroy()
    const s = socket
    return await new Promise<number>((resolve, reject) => {
      let bytes = 0
      const start = performance.now()
      s.on("data", (chunk: Buffer) => {
        bytes += chunk.length
        o.count?.(chunk.length)
        if (o.bytesPerSecond !== undefined) {
          // Ahead of the pace: stop reading until the schedule catches up.
          const aheadMs = (bytes / o.bytesPerSecond) * 1000 - (performance.now() - start)
          if (aheadMs > 5) {
            s.pause()
            setTimeout(() => s.resume(), aheadMs).unref()
          }
        }
      })
      s.once("end", () => (bytes === n ? resolve(bytes) : reject(new Error(`got ${bytes} of ${n} bytes`))))
      s.once("error", (err) => (stopped ? resolve(bytes) : reject(err)))
      s.once("close", () => (stopped ? resolve(bytes) : reject(new Error(`closed after ${bytes} of ${n} bytes`))))
      s.write(`SOURCE ${n}\n`)
    }).finally(() => s.destroy())
  })()
  return {
    done,
    stop: () => {
      stopped = true
      socket?.destroy()
    }
  }
}
