/**
 * The benchmark client, dialing like Infisical's backend (protocol.md §4.5): outer TLS to the
 * relay with a relay-client certificate naming the gateway, then (for pings) inner TLS with the
 * platform client certificate and one ALPN. The "direct" target skips the relay: plain TCP to the
 * gateway's -listen port, inner TLS on top for pings.
 *
 * Bulk transfers talk to the gateway's `-mode bench` handler: "SOURCE <n>\n" (gateway -> client)
 * or "DISCARD\n" + n bytes (client -> gateway, answered with the count).
 */
import * as net from "node:net"
import { performance } from "node:perf_hooks"
import type { Duplex } from "node:stream"
import * as tls from "node:tls"
import type { ClientContexts } from "./material.ts"

export type Target =
  | { readonly kind: "relay"; readonly port: number; readonly gatewayId: string; readonly contexts: ClientContexts }
  | { readonly kind: "direct"; readonly port: number; readonly contexts: ClientContexts }

const HOST = "127.0.0.1"

const withTimeout = <A>(ms: number, what: string, p: (settle: (cleanup: () => void) => void) => Promise<A>): Promise<A> => {
  let cleanup: () => void = () => undefined
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p((c) => {
      cleanup = c
    }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        cleanup()
        reject(new Error(`${what}: timed out after ${ms} ms`))
      }, ms)
    })
  ]).finally(() => clearTimeout(timer))
}

/** The outer connection: TLS to the relay, or TCP to the gateway for the direct target. */
export const openOuter = (target: Target, timeoutMs = 15_000): Promise<Duplex> =>
  withTimeout(timeoutMs, "connect", (onTimeout) =>
    new Promise<Duplex>((resolve, reject) => {
      if (target.kind === "direct") {
        const socket = net.connect({ host: HOST, port: target.port })
        onTimeout(() => socket.destroy())
        socket.once("connect", () => {
          socket.off("error", reject)
          resolve(socket)
        })
        socket.once("error", reject)
        return
      }
      // servername defaults to the host for the identity check; an IP is not sent as SNI.
      const socket = tls.connect({ host: HOST, port: target.port, secureContext: target.contexts.outer, minVersion: "TLSv1.2" })
      onTimeout(() => socket.destroy())
      socket.once("secureConnect", () => {
        socket.off("error", reject)
        resolve(socket)
      })
      socket.once("error", reject)
      socket.once("close", () => reject(new Error("outer connection closed during the handshake")))
    })
  )

/** One backend-style gateway ping: connect, inner TLS with ALPN infisical-ping, read PONG. Returns ms. */
export const pingSession = async (target: Target, timeoutMs = 15_000): Promise<number> => {
  const start = performance.now()
  const outer = await openOuter(target, timeoutMs)
  try {
    await withTimeout(timeoutMs, "ping", (onTimeout) =>
      new Promise<void>((resolve, reject) => {
        const inner = tls.connect({
          socket: outer,
          secureContext: target.contexts.inner,
          ALPNProtocols: ["infisical-ping"],
          servername: "localhost",
          minVersion: "TLSv1.2",
          maxVersion: "TLSv1.3"
        })
        onTimeout(() => inner.destroy())
        let got = ""
        inner.once("secureConnect", () => {
          if (!inner.authorized) reject(new Error(`inner TLS not authorized: ${String(inner.authorizationError)}`))
        })
        inner.on("data", (chunk: Buffer) => {
          got += chunk.toString("latin1")
          if (got.includes("PONG\n")) {
            inner.destroy()
            resolve()
          }
        })
        inner.once("error", reject)
        inner.once("close", () => reject(new Error(`inner connection closed after ${JSON.stringify(got)}`)))
      })
    )
    return performance.now() - start
  } finally {
    outer.destroy()
  }
}

export interface Transfer {
  readonly bytes: number
  readonly ms: number
}

/** gateway -> client: ask for n bytes and read them to EOF. Time excludes the connection setup. */
export const bulkDown = async (target: Target, n: number, timeoutMs = 120_000): Promise<Transfer> => {
  const socket = await openOuter(target)
  try {
    return await withTimeout(timeoutMs, `download of ${n} bytes`, () =>
      new Promise<Transfer>((resolve, reject) => {
        let bytes = 0
        const start = performance.now()
        socket.on("data", (chunk: Buffer) => {
          bytes += chunk.length
        })
        socket.once("end", () => {
          const ms = performance.now() - start
          if (bytes === n) resolve({ bytes, ms })
          else reject(new Error(`got ${bytes} bytes, want ${n}`))
        })
        socket.once("error", reject)
        socket.once("close", () => reject(new Error(`closed after ${bytes} of ${n} bytes`)))
        socket.write(`SOURCE ${n}\n`)
      })
    )
  } finally {
    socket.destroy()
  }
}

const UPLOAD_CHUNK = Buffer.alloc(256 * 1024, 0x5a)

/** client -> gateway: send n bytes, half-close, wait for the gateway's count. */
export const bulkUp = async (target: Target, n: number, timeoutMs = 120_000): Promise<Transfer> => {
  const socket = await openOuter(target)
  try {
    return await withTimeout(timeoutMs, `upload of ${n} bytes`, () =>
      new Promise<Transfer>((resolve, reject) => {
        let reply = ""
        const start = performance.now()
        socket.on("data", (chunk: Buffer) => {
          reply += chunk.toString("latin1")
        })
        socket.once("end", () => {
          const ms = performance.now() - start
          if (reply.trim() === String(n)) resolve({ bytes: n, ms })
          else reject(new Error(`gateway counted ${JSON.stringify(reply.trim())}, want ${n}`))
        })
        socket.once("error", reject)
        socket.once("close", () => reject(new Error(`closed before the reply (${JSON.stringify(reply)})`)))
        socket.write("DISCARD\n")
        let left = n
        const pumpOut = () => {
          while (left > 0) {
            const chunk = left >= UPLOAD_CHUNK.length ? UPLOAD_CHUNK : UPLOAD_CHUNK.subarray(0, left)
            left -= chunk.length
            if (!socket.write(chunk)) {
              socket.once("drain", pumpOut)
              return
            }
          }
          socket.end()
        }
        pumpOut()
      })
    )
  } finally {
    socket.destroy()
  }
}

/** An idle session: connected through to the gateway's echo handler (one byte round trip), held open. */
export const idleSession = async (target: Target, timeoutMs = 30_000): Promise<Duplex> => {
  const socket = await openOuter(target, timeoutMs)
  try {
    await withTimeout(timeoutMs, "idle session", () =>
      new Promise<void>((resolve, reject) => {
        const onClose = () => reject(new Error("closed before the echo"))
        socket.once("data", () => {
          socket.off("error", reject)
          socket.off("close", onClose)
          resolve()
        })
        socket.once("error", reject)
        socket.once("close", onClose)
        socket.write("ECHO\nx")
      })
    )
    socket.on("error", () => undefined)
    return socket
  } catch (err) {
    socket.destroy()
    throw err
  }
}
