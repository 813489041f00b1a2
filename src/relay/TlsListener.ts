/**
 * The client-facing mTLS listener (protocol.md §4.2). TLS 1.2+, the relay's leaf certificate,
 * client certificates verified against every certificate of clientCertificateChain, a 5 s
 * handshake deadline. Failed handshakes and bare connect-and-close are dropped quietly and
 * counted: the relay never writes plaintext on this port.
 *
 * A verified connection is routed by its certificate: the zero-UUID CN is the control plane's
 * heartbeat probe (closed at once); any other CN names the gateway whose tunnel gets a new
 * `direct-tcpip` channel, and the session pumps bytes until either side ends.
 *
 * Admission limits (src/relay/Limits.ts): a plain TCP server accepts, checks the connection cap and
 * the accept rate (AcceptGate) before TLS sees a byte, then hands the socket to the TLS server;
 * --tls-handshake-timeout runs from accept; a routed session needs a slot (SessionSlots: global,
 * per gateway, per org, fair share) and a channel slot on its tunnel (--max-channels-per-tunnel).
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Duration, Effect, FiberSet, Layer, Metric, Stream } from "effect"
import { Credentials } from "../Credentials.ts"
import {
  heartbeatProbes,
  sessionBytes,
  sessionsActive,
  sessionsRefused,
  sessionsTotal,
  tagged,
  tlsHandshakeFailures
} from "../observability/Metrics.ts"
import { isHeartbeatProbe, parseClientIdentityEither } from "../pki/clientIdentity.ts"
import { RelayConfig } from "../RelayConfig.ts"
import { ChannelLimitError } from "../ssh/server.ts"
import { makeAcceptGate } from "./AcceptGate.ts"
import { makeFairShare } from "./FairShare.ts"
import { bindListener, displayAddress } from "./Listener.ts"
import { defaultRelayLimits, Limits } from "./Limits.ts"
import { pump } from "./pump.ts"
import { Drain } from "./Drain.ts"
import { countConnectionRefused, makeWarningThrottle } from "./Refusals.ts"
import { SessionSlots } from "./SessionSlots.ts"
import { type Tunnel, Tunnels } from "./Tunnels.ts"

/** The default --tls-handshake-timeout. */
export const TLS_HANDSHAKE_TIMEOUT_MS = Duration.toMillis(defaultRelayLimits.tlsHandshakeTimeout)

const bytesUp = tagged(sessionBytes, "direction", "client_to_gateway")
const bytesDown = tagged(sessionBytes, "direction", "gateway_to_client")

/** What a handshake that ran out of time fails with (the code Node's own handshake timeout uses). */
const handshakeTimeoutError = () =>
  Object.assign(new Error("TLS handshake timeout"), { code: "ERR_TLS_HANDSHAKE_TIMEOUT" })
/** How long a closing connection may take to flush its last TLS records before it is dropped. */
const CLOSE_FLUSH_MS = 5_000

/**
 * Close a connection whose handshake completed, as Go's `tls.Conn.Close` does: whatever TLS still
 * has to send goes out first (in TLS 1.2 the server's Finished is still queued when
 * 'secureConnection' fires: destroying at once would fail the client's handshake, and with it the
 * control plane's heartbeat probe), then close_notify, then the socket is closed. No application
 * byte is ever written.
 */
const closeAfterHandshake = (socket: tls.TLSSocket) => {
  if (socket.destroyed) return
  const timer = setTimeout(() => socket.destroy(), CLOSE_FLUSH_MS)
  timer.unref()
  socket.once("close", () => clearTimeout(timer))
  socket.destroySoon()
}

const refuse = (socket: tls.TLSSocket, reason: string) =>
  Effect.sync(() => closeAfterHandshake(socket)).pipe(Effect.zipRight(Metric.increment(tagged(sessionsRefused, "reason", reason))))

export const TlsListenerLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const credentials = yield* Credentials
    const tunnels = yield* Tunnels
    const drain = yield* Drain
    const limits = yield* Limits
    const bundle = yield* credentials.current
    const sessions = yield* FiberSet.make()
    const run = yield* FiberSet.runtime(sessions)<never>()
    const background = yield* FiberSet.makeRuntime<never>()
    const slots = new SessionSlots()
    const fairShare = makeFairShare()
    const warnDue = makeWarningThrottle()
    let nextId = 1

    const server = tls.createServer({
      ...bundle.tls,
      requestCert: true,
      // As Go does for every TCP connection: small writes (an echo, a PONG) leave at once instead of
      // waiting ~40 ms for the client's delayed ACK (Nagle).
      noDelay: true,
      // An EOF before the handshake completes (a bare connect-and-close "ping") closes at once
      // rather than holding the socket until the handshake deadline. Sessions turn half-close on
      // (see 'secureConnection').
      allowHalfOpen: false,
      // Verified below, so that refusals are counted by reason; nothing is written either way.
      rejectUnauthorized: false,
      // Ours runs from accept and follows reloads (see the front server below).
      handshakeTimeout: 0
    })
    server.on("tlsClientError", (error, socket) => {
      socket.destroy()
      const reason = (error as NodeJS.ErrnoException).code ?? "handshake_error"
      background(Metric.increment(tagged(tlsHandshakeFailures, "reason", reason)))
    })
    // Renewed certificates apply to the next handshakes; live connections keep theirs.
    yield* credentials.changes.pipe(
      Stream.runForEach((next) => Effect.sync(() => server.setSecureContext(next.tls))),
      Effect.forkScoped,
      Effect.interruptible
    )

    /** The routed part of a session that holds a slot: a channel on the tunnel, then the pump. */
    const routeSession = (
      socket: tls.TLSSocket,
      tunnel: Tunnel,
      ids: { readonly gatewayId: string; readonly gatewayName: string; readonly org: string }
    ) =>
      Effect.gen(function* () {
        const { gatewayId, gatewayName, org } = ids
        const channel = yield* Effect.either(Effect.tryPromise({
          try: () => tunnel.openChannel(),
          catch: (cause) => ({ atChannelLimit: cause instanceof ChannelLimitError })
        }))
        if (channel._tag === "Left") {
          if (channel.left.atChannelLimit) {
            if (warnDue("max_channels")) {
              yield* Effect.logWarning(`Gateway '${gatewayName}' (${gatewayId}) is at --max-channels-per-tunnel; further refusals are counted, not logged`)
            }
            return yield* refuse(socket, "max_channels")
          }
          yield* Effect.logInfo(`Failed to open a channel to gateway '${gatewayName}' (${gatewayId})`).pipe(Effect.annotateLogs({ gatewayId, org }))
          return yield* refuse(socket, "channel_open_failed")
        }
        yield* Metric.increment(sessionsTotal)
        yield* Metric.increment(sessionsActive)
        const started = Date.now()
        const current = limits.current()
        const result = yield* pump(socket, channel.right, {
          org,
          gatewayId,
          idleTimeoutMs: Duration.toMillis(current.sessionIdleTimeout),
          ...(current.fairShare ? { fairShare } : {})
        }).pipe(Effect.ensuring(Metric.incrementBy(sessionsActive, -1)))
        yield* Metric.incrementBy(bytesUp, result.bytesUp)
        yield* Metric.incrementBy(bytesDown, result.bytesDown)
        yield* Effect.annotateCurrentSpan({
          "relay.gateway_id": gatewayId,
          "relay.org": org,
          "relay.bytes_up": result.bytesUp,
          "relay.bytes_down": result.bytesDown,
          "relay.close_reason": result.reason
        })
        // Built only when debug logs are on: this runs for every session.
        yield* Effect.logDebug("Session closed").pipe(
          Effect.annotateLogs({
            gatewayId,
            org,
            bytesUp: result.bytesUp,
            bytesDown: result.bytesDown,
            reason: result.reason,
            durationMs: Date.now() - started
          }),
          Effect.whenLogLevel("Debug")
        )
      })

    const session = (socket: tls.TLSSocket, sessionId: number) =>
      Effect.gen(function* () {
        if (!socket.authorized) {
          // Dropped at once, not flushed: a TLS 1.2 client then sees its handshake fail (its last
          // flight from us is still queued), the closest Node gets to Go's bad_certificate alert.
          socket.destroy()
          const reason = String(socket.authorizationError ?? "unauthorized")
          yield* Metric.increment(tagged(tlsHandshakeFailures, "reason", reason))
          return yield* Effect.logDebug("TLS client certificate refused").pipe(Effect.annotateLogs({ reason }))
        }
        const der = socket.getPeerX509Certificate()?.raw
        const parsed = der ? parseClientIdentityEither(der) : undefined
        if (!parsed || parsed._tag === "Left" || parsed.right.gatewayId === undefined) {
          yield* Effect.logDebug("Client certificate without a usable subject, closing")
          return yield* refuse(socket, "bad_certificate")
        }
        const identity = parsed.right
        if (isHeartbeatProbe(identity)) {
          closeAfterHandshake(socket)
          yield* Metric.increment(heartbeatProbes)
          return yield* Effect.logDebug("Heartbeat check successful, closing connection.")
        }
        const gatewayId = identity.gatewayId!
        const org = identity.orgLabel ?? ""
        if (identity.gatewayName._tag === "Invalid") {
          yield* Effect.logInfo("Invalid gateway name in client certificate, closing").pipe(Effect.annotateLogs({ gatewayId, org }))
          return yield* refuse(socket, "invalid_gateway_name")
        }
        const gatewayName = identity.gatewayName._tag === "Valid" ? identity.gatewayName.name : ""
        const tunnel = yield* tunnels.get(gatewayId)
        if (!tunnel) {
          yield* Effect.logInfo(`Gateway '${gatewayName}' (${gatewayId}) not connected`).pipe(Effect.annotateLogs({ gatewayId, org }))
          return yield* refuse(socket, "gateway_not_connected")
        }
        // The slot is released exactly once, whatever ends the session (interruption included).
        return yield* Effect.acquireUseRelease(
          Effect.sync(() => slots.acquire(org, gatewayId, limits.current())),
          (refusal) =>
            refusal === undefined
              ? routeSession(socket, tunnel, { gatewayId, gatewayName, org })
              : Effect.gen(function* () {
                if (warnDue(refusal)) {
                  yield* Effect.logWarning(`Session refused (${refusal}): a session cap is reached; further refusals are counted, not logged`).pipe(
                    Effect.annotateLogs({ gatewayId, org, sessions: slots.size })
                  )
                }
                yield* Effect.logDebug("Session refused by a session cap").pipe(Effect.annotateLogs({ gatewayId, org, reason: refusal }))
                yield* refuse(socket, refusal)
              }),
          (refusal) => (refusal === undefined ? Effect.sync(() => slots.release(org, gatewayId)) : Effect.void)
        )
      }).pipe(
        Effect.annotateLogs({ sessionId }),
        // No stack trace: capturing one costs more than the rest of the span, once per session.
        Effect.withSpan("relay.session", { attributes: { "relay.session_id": sessionId }, captureStackTrace: false }),
        Effect.onInterrupt(() => Effect.sync(() => socket.destroy()))
      )

    // Handshakes in progress, by peer address: the TLS socket Node makes from an accepted socket is
    // not reachable from it, so the two meet by address and port (unique among live connections).
    const handshakes = new Map<string, NodeJS.Timeout>()
    const peerKey = (socket: net.Socket) => `${socket.remoteAddress}|${socket.remotePort}`

    // The front: plain TCP, so that admission happens before TLS reads or writes anything.
    const front = net.createServer({ noDelay: true, allowHalfOpen: false })
    const admit = yield* makeAcceptGate(front, "tls")
    front.on("connection", (socket: net.Socket) => {
      socket.on("error", () => socket.destroy())
      if (!admit(socket)) return
      if (socket.remoteAddress === undefined) return socket.destroy() // already gone
      const key = peerKey(socket)
      const timer = setTimeout(() => {
        handshakes.delete(key)
        countConnectionRefused("tls", "handshake_timeout")
        // Surfaces as 'tlsClientError' with this code, counted there as a failed handshake.
        socket.destroy(handshakeTimeoutError())
      }, Duration.toMillis(limits.current().tlsHandshakeTimeout))
      handshakes.set(key, timer)
      socket.once("close", () => {
        clearTimeout(timer)
        if (handshakes.get(key) === timer) handshakes.delete(key)
      })
      server.emit("connection", socket)
    })

    server.on("secureConnection", (socket: tls.TLSSocket) => {
      const key = peerKey(socket)
      clearTimeout(handshakes.get(key))
      handshakes.delete(key)
      // A client's EOF ends only its direction: the gateway may still answer (half-close).
      socket.allowHalfOpen = true
      socket.on("error", () => socket.destroy())
      const id = nextId++
      run(session(socket, id))
    })

    const bound = yield* bindListener(front, { label: "TLS", port: config.tlsPort, host: config.listenHost })
    yield* drain.register({
      stopAccepting: Effect.sync(() => front.close()),
      idle: Effect.ignore(FiberSet.awaitEmpty(sessions))
    })
    yield* Effect.logInfo(`TLS server listening on ${displayAddress(config.listenHost, bound.address)} for clients`)
  })
)
