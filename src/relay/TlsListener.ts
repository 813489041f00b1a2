/**
 * The client-facing mTLS listener (protocol.md §4.2). TLS 1.2+, the relay's leaf certificate,
 * client certificates verified against every certificate of clientCertificateChain, a 5 s
 * handshake deadline. Failed handshakes and bare connect-and-close are dropped quietly: the relay
 * never writes plaintext on this port.
 */
import * as tls from "node:tls"
import { Effect, FiberSet, Layer, Stream } from "effect"
import { Credentials } from "../Credentials.ts"
import { RelayConfig } from "../RelayConfig.ts"
import { bindListener, displayAddress } from "./Listener.ts"
import { Tunnels } from "./Tunnels.ts"

export const HEARTBEAT_PROBE_CN = "00000000-0000-0000-0000-000000000000"
export const TLS_HANDSHAKE_TIMEOUT_MS = 5_000

export const TlsListenerLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const credentials = yield* Credentials
    const tunnels = yield* Tunnels
    const bundle = yield* credentials.current
    const fibers = yield* FiberSet.make()
    const run = yield* FiberSet.runtime(fibers)<never>()

    const server = tls.createServer({
      ...bundle.tls,
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS
    })
    // A failed or abandoned handshake is the client's problem: log at debug, close quietly.
    server.on("tlsClientError", (error, socket) => {
      socket.destroy()
      run(Effect.logDebug("TLS handshake failed", { reason: error.message }))
    })
    // Renewed certificates apply to the next handshakes; live connections keep theirs.
    yield* credentials.changes.pipe(
      Stream.runForEach((next) => Effect.sync(() => server.setSecureContext(next.tls))),
      Effect.forkScoped,
      Effect.interruptible
    )

    const route = (socket: tls.TLSSocket) =>
      Effect.gen(function* () {
        const peer = socket.getPeerCertificate()
        const gatewayId = typeof peer.subject?.CN === "string" ? peer.subject.CN : ""
        if (gatewayId === HEARTBEAT_PROBE_CN) {
          yield* Effect.logDebug("Heartbeat check successful, closing connection.")
          socket.destroy()
          return
        }
        const tunnel = yield* tunnels.get(gatewayId)
        if (!tunnel) {
          yield* Effect.logInfo(`Gateway (${gatewayId}) not connected`)
          socket.destroy()
          return
        }
        // Sessions are wired in by the data plane (issue 4); until then nothing is routed.
        socket.destroy()
      })

    server.on("secureConnection", (socket: tls.TLSSocket) => {
      socket.on("error", () => socket.destroy())
      run(route(socket))
    })

    const bound = yield* bindListener(server, { label: "TLS", port: config.tlsPort, host: config.listenHost })
    yield* Effect.logInfo(`TLS server listening on ${displayAddress(config.listenHost, bound.address)} for clients`)
  })
)
