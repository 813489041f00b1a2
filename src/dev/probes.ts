/**
 * How the backend dials relays and gateways (upstream `lib/gateway-v2/gateway-v2.ts`), with the
 * same TLS options and the same error messages, since those messages end up in API responses:
 *
 * - `connectRelay` (`createRelayConnection`): outer mTLS to the relay's TLS port, `servername` =
 *   the stored relay host (SNI even for an IP), trust = the relay server CA chain.
 * - `connectGateway` (`createGatewayConnection`): inner mTLS over that socket with one ALPN.
 * - `pingGateway`: the gateway heartbeat, ALPN `infisical-ping`, waits for `PONG`.
 *
 * Plain Node sockets and promises, as upstream: these run inside request handlers.
 */
import type { Socket } from "node:net"
import tls from "node:tls"
import { splitPemChain } from "../pki/mint.ts"

export interface ClientCredentials {
  readonly clientCertificate: string
  readonly clientPrivateKey: string
  readonly serverCertificateChain: string
}

/** Open backend sockets, destroyed when the control plane stops (upstream leaves probes open). */
export class SocketRegistry {
  private readonly sockets = new Set<Socket>()

  track<S extends Socket>(socket: S): S {
    this.sockets.add(socket)
    socket.once("close", () => this.sockets.delete(socket))
    return socket
  }

  destroyAll(): void {
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
  }

  get size(): number {
    return this.sockets.size
  }
}

export interface RelayDial {
  /** The relay's stored host: the TLS servername. */
  readonly relayHost: string
  /** Where to connect (usually the host part of relayHost and port 8443). */
  readonly address: { readonly host: string; readonly port: number }
  readonly credentials: ClientCredentials
  readonly timeoutMs: number
  readonly sockets: SocketRegistry
}

/** Resolves once the outer handshake completes; rejects with `TLS connection error: <node message>`. */
export const connectRelay = (dial: RelayDial): Promise<tls.TLSSocket> =>
  new Promise((resolve, reject) => {
    try {
      const socket = dial.sockets.track(
        tls.connect(
          {
            host: dial.address.host,
            port: dial.address.port,
            servername: dial.relayHost,
            cert: dial.credentials.clientCertificate,
            key: dial.credentials.clientPrivateKey,
            ca: splitPemChain(dial.credentials.serverCertificateChain),
            minVersion: "TLSv1.2",
            rejectUnauthorized: true
          },
          () => resolve(socket)
        )
      )
      // After the handshake the listener stays, as upstream's: later errors only end the socket.
      socket.on("error", (err: Error) => reject(new Error(`TLS connection error: ${err.message}`)))
      socket.on("timeout", () => {
        socket.destroy()
        reject(new Error("TLS connection timeout"))
      })
      socket.setTimeout(dial.timeoutMs)
    } catch (error) {
      reject(new Error(`Failed to create TLS connection: ${error instanceof Error ? error.message : String(error)}`))
    }
  })

/** The inner mTLS session to the gateway through an established relay connection. */
export const connectGateway = (
  relayConnection: tls.TLSSocket,
  gateway: ClientCredentials,
  alpn: string,
  timeoutMs: number,
  sockets: SocketRegistry
): Promise<tls.TLSSocket> =>
  new Promise((resolve, reject) => {
    try {
      const socket = sockets.track(
        tls.connect(
          {
            socket: relayConnection,
            servername: "localhost",
            cert: gateway.clientCertificate,
            key: gateway.clientPrivateKey,
            ca: splitPemChain(gateway.serverCertificateChain),
            minVersion: "TLSv1.2",
            maxVersion: "TLSv1.3",
            rejectUnauthorized: true,
            ALPNProtocols: [alpn]
          },
          () => {
            if (!socket.authorized) {
              socket.destroy()
              reject(new Error(`Gateway TLS authorization failed: ${socket.authorizationError?.message}`))
              return
            }
            resolve(socket)
          }
        )
      )
      socket.on("error", (err: Error) => reject(new Error(`Failed to establish gateway mTLS: ${err.message}`)))
      socket.setTimeout(timeoutMs)
      socket.on("timeout", () => {
        socket.destroy()
        reject(new Error("Gateway connection timeout"))
      })
    } catch (error) {
      reject(
        new Error(`Failed to create gateway TLS connection: ${error instanceof Error ? error.message : String(error)}`)
      )
    }
  })

export const PING_ALPN = "infisical-ping"

/**
 * The gateway heartbeat: relay → gateway with ALPN `infisical-ping`, then the first data must be
 * `PONG` (trimmed) within `pingTimeoutMs`. Rejects with the message upstream puts in its 400:
 * the failing stage's message, else `Connection closed without receiving PONG` / `TCP connection timeout`.
 */
export const pingGateway = async (
  relay: RelayDial,
  gateway: ClientCredentials,
  pingTimeoutMs: number
): Promise<void> => {
  const outer = await connectRelay(relay)
  try {
    const inner = await connectGateway(outer, gateway, PING_ALPN, relay.timeoutMs, relay.sockets)
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("TCP connection timeout")), pingTimeoutMs)
        const settle = (f: () => void) => () => {
          clearTimeout(timer)
          f()
        }
        inner.on("data", (data: Buffer) => {
          if (data.toString().trim() === "PONG") settle(resolve)()
        })
        inner.once("close", settle(() => reject(new Error("Connection closed without receiving PONG"))))
      })
    } finally {
      inner.destroy()
    }
  } finally {
    outer.destroy()
  }
}
