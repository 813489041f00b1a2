/**
 * The client-facing mTLS listener (protocol.md §4.2). TLS 1.2+, the relay's leaf certificate,
 * client certificates verified against every certificate of clientCertificateChain, a 5 s
 * handshake deadline. Failed handshakes and bare connect-and-close are dropped quietly and
 * counted: the relay never writes plaintext on this port.
 *
 * Each completed handshake is a session (Session.ts: routed by the client certificate's CN to a
 * `direct-tcpip` channel on that gateway's tunnel, or refused), run in plain callbacks and tracked
 * in LiveSessions (drain waits for them, shutdown cancels them). Its outcome is counted and put on
 * its relay.session span here; a log line, when one is due, is the only thing that runs a fiber.
 *
 * Admission limits (src/relay/Limits.ts): a plain TCP server accepts, checks the connection cap and
 * the accept rate (AcceptGate) before TLS sees a byte, then hands the socket to the TLS server;
 * --tls-handshake-timeout runs from accept; a routed session needs a slot (SessionSlots: global,
 * per gateway, per org, fair share) and a channel slot on its tunnel (--max-channels-per-tunnel).
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Context, Duration, Effect, Exit, FiberId, FiberRef, FiberSet, Layer, LogLevel, Stream } from "effect"
import { Credentials } from "../Credentials.ts"
import { tagged, tlsHandshakeFailures } from "../observability/Metrics.ts"
import { RelayConfig } from "../RelayConfig.ts"
import { makeAcceptGate } from "./AcceptGate.ts"
import { makeFairShare } from "./FairShare.ts"
import { bindListener, displayAddress } from "./Listener.ts"
import { defaultRelayLimits, Limits } from "./Limits.ts"
import { Drain } from "./Drain.ts"
import { LiveSessions } from "./LiveSessions.ts"
import { countConnectionRefused } from "./Refusals.ts"
import { type SessionContext, type SessionOutcome, startSession } from "./Session.ts"
import { makeSessionReport } from "./SessionReport.ts"
import { SessionSlots } from "./SessionSlots.ts"
import { Tunnels } from "./Tunnels.ts"

/** The default --tls-handshake-timeout. */
export const TLS_HANDSHAKE_TIMEOUT_MS = Duration.toMillis(defaultRelayLimits.tlsHandshakeTimeout)

/** What a handshake that ran out of time fails with (the code Node's own handshake timeout uses). */
const handshakeTimeoutError = () =>
  Object.assign(new Error("TLS handshake timeout"), { code: "ERR_TLS_HANDSHAKE_TIMEOUT" })

export const TlsListenerLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const credentials = yield* Credentials
    const tunnels = yield* Tunnels
    const drain = yield* Drain
    const limits = yield* Limits
    const bundle = yield* credentials.current
    // Shutdown cancels what drain did not wait out (finalizers run in reverse: after drain).
    const sessions = new LiveSessions()
    yield* Effect.addFinalizer(() => Effect.sync(() => sessions.cancelAll()))
    const background = yield* FiberSet.makeRuntime<never>()
    const tracer = yield* Effect.tracer
    const clock = yield* Effect.clock
    const parentSpan = yield* Effect.option(Effect.currentParentSpan)
    const debugLogs = LogLevel.lessThanEqual(yield* FiberRef.get(FiberRef.currentMinimumLogLevel), LogLevel.Debug)
    const slots = new SessionSlots()
    const fairShare = makeFairShare()
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
      tagged(tlsHandshakeFailures, "reason", reason).unsafeUpdate(1, [])
    })
    // Renewed certificates apply to the next handshakes; live connections keep theirs.
    yield* credentials.changes.pipe(
      Stream.runForEach((next) => Effect.sync(() => server.setSecureContext(next.tls))),
      Effect.forkScoped,
      Effect.interruptible
    )

    const sessionContext: SessionContext = { findTunnel: tunnels.get, slots, limits: limits.current, fairShare }
    const report = makeSessionReport({ debugLogs, sessionsHeld: () => slots.size, now: () => clock.unsafeCurrentTimeNanos() })

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
      const sessionId = nextId++
      // The span is made by hand: the session itself runs in plain callbacks (Session.ts).
      const span = tracer.span("relay.session", parentSpan, Context.empty(), [], clock.unsafeCurrentTimeNanos(), "internal")
      span.attribute("relay.session_id", sessionId)
      sessions.run<SessionOutcome>(
        (onEnd) => startSession(socket, sessionContext, onEnd),
        (outcome) => {
          const line = report(outcome, span)
          if (line) background(line.pipe(Effect.annotateLogs({ sessionId }), Effect.withParentSpan(span)))
        },
        () => span.end(clock.unsafeCurrentTimeNanos(), Exit.interrupt(FiberId.none))
      )
    })

    const bound = yield* bindListener(front, { label: "TLS", port: config.tlsPort, host: config.listenHost })
    yield* drain.register({
      stopAccepting: Effect.sync(() => front.close()),
      idle: Effect.promise(() => sessions.whenEmpty())
    })
    yield* Effect.logInfo(`TLS server listening on ${displayAddress(config.listenHost, bound.address)} for clients`)
  })
)
