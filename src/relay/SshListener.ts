/**
 * The gateway-facing SSH listener (protocol.md §4.1). Each connection runs our SSH server with the
 * current host certificate, authenticates the gateway's user certificate (certPolicy), and is
 * registered in Tunnels under its gateway id until it closes.
 *
 * One tunnel per gateway, as upstream, but a stale tunnel no longer locks its gateway out: when a
 * gateway that already has a tunnel connects again, the old tunnel must answer a keepalive within
 * `staleCheckMs`; if it does, the new connection is closed (upstream's behaviour), if not, the old
 * one is closed and the new one takes its place.
 *
 * Admission limits (src/relay/Limits.ts): connections and accept rate are checked at accept
 * (AcceptGate), the whole pre-auth phase is bounded by --ssh-handshake-timeout, new gateways are
 * refused beyond --max-tunnels, each tunnel holds at most --max-channels-per-tunnel channels, and
 * with --disconnect-expired-tunnels a tunnel is closed when its gateway's certificate expires.
 */
import * as net from "node:net"
import { Duration, Effect, FiberSet, Layer, Metric } from "effect"
import { Credentials } from "../Credentials.ts"
import {
  sshAuthFailures,
  sshHandshakeFailures,
  tagged,
  tunnelConnections,
  tunnelsConnected,
  tunnelsExpired
} from "../observability/Metrics.ts"
import { RelayConfig } from "../RelayConfig.ts"
import { CERT_TIME_INFINITY } from "../ssh/certs.ts"
import { checkGatewayCertificate, type CertificateVerdict } from "../ssh/certPolicy.ts"
import { acceptSshConnection, AUTH_TIMEOUT_REASON, type CloseInfo, type SshServerConnection } from "../ssh/server.ts"
import { makeAcceptGate } from "./AcceptGate.ts"
import { authFailureLabel } from "./authFailureReason.ts"
import { bindListener, displayAddress } from "./Listener.ts"
import { Drain } from "./Drain.ts"
import { capOf, Limits } from "./Limits.ts"
import { countConnectionRefused, makeWarningThrottle } from "./Refusals.ts"
import { type Tunnel, Tunnels } from "./Tunnels.ts"

/** Keepalives every 15 s, 30 s to answer: a half-open tunnel is found within ~45 s. */
export const TUNNEL_KEEPALIVE = { intervalMs: 15_000, timeoutMs: 30_000 } as const
/** How long a registered tunnel has to prove it is alive when its gateway connects again. */
export const STALE_CHECK_MS = 3_000

/**
 * The most a session's SSH window may grow to (it starts at 8 MiB, Go's relay keeps 2 MiB): room
 * for ~160 MiB/s at 100 ms round trip. It is also what a stalled client can make the relay hold
 * for a session whose window grew, so it stays modest.
 */
export const MAX_CHANNEL_WINDOW = 16 * 1024 * 1024

const toTunnel = (conn: SshServerConnection<CertificateVerdict>, gatewayId: string, gatewayName: string): Tunnel => ({
  gatewayId,
  gatewayName,
  openChannel: () => conn.openDirectTcpip({ timeoutMs: 10_000 }),
  ping: (timeoutMs) => conn.ping(timeoutMs),
  close: (reason) => conn.close(reason)
})

/**
 * Call `f` at `epochMillis`; returns a cancel. Timers longer than Node's ~24.8-day maximum would
 * fire at once, so it waits in steps of at most a day. Unref'd: it never keeps the process alive.
 */
const atTime = (epochMillis: number, f: () => void): (() => void) => {
  let timer: NodeJS.Timeout | undefined
  const arm = () => {
    const left = epochMillis - Date.now()
    if (left <= 0) return f()
    timer = setTimeout(arm, Math.min(left, 86_400_000))
    timer.unref()
  }
  arm()
  return () => clearTimeout(timer)
}

/** Wait for a promise from Node land without ever failing the fiber. */
const settle = <A>(promise: () => Promise<A>) =>
  Effect.async<{ ok: true; value: A } | { ok: false; error: unknown }>((resume) => {
    promise().then(
      (value) => resume(Effect.succeed({ ok: true, value })),
      (error: unknown) => resume(Effect.succeed({ ok: false, error }))
    )
  })

export const SshListenerLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const credentials = yield* Credentials
    const tunnels = yield* Tunnels
    const drain = yield* Drain
    const limits = yield* Limits
    const fibers = yield* FiberSet.make()
    const run = yield* FiberSet.runtime(fibers)<never>()
    const warnDue = makeWarningThrottle()

    /**
     * Register the tunnel, settling a duplicate by checking whether the old one is alive; "full"
     * when a new gateway would exceed --max-tunnels.
     */
    const register = (tunnel: Tunnel) =>
      Effect.gen(function* () {
        const existing = yield* tunnels.add(tunnel, limits.current().maxTunnels)
        if (existing === "full") return "full" as const
        if (!existing) return true
        const alive = yield* settle(() => existing.ping(STALE_CHECK_MS))
        if (!alive.ok && (yield* tunnels.replace(existing, tunnel))) {
          existing.close("replaced by a new connection of the same gateway")
          yield* Effect.logWarning("Replaced a stale tunnel that did not answer a keepalive").pipe(Effect.annotateLogs({
            gatewayId: tunnel.gatewayId
          }))
          yield* Metric.increment(tagged(tunnelConnections, "outcome", "stale_replaced"))
          return true
        }
        return false
      })

    const serve = (socket: net.Socket) =>
      Effect.gen(function* () {
        const bundle = yield* credentials.current
        const conn = acceptSshConnection(socket, {
          limits: {
            // From accept: a peer that trickles its version line or stalls the key exchange is bounded too.
            authTimeoutMs: Duration.toMillis(limits.current().sshHandshakeTimeout),
            // Read at each open, so a reload applies to live tunnels' next channels.
            maxChannels: () => capOf(limits.current().maxChannelsPerTunnel),
            // A session to a far gateway (a window arrives within a few round trips) may double its
            // 8 MiB window up to this; near gateways keep 8 MiB (src/ssh/channel.ts).
            maxWindowSize: MAX_CHANNEL_WINDOW
          },
          hostKey: bundle.ssh.hostKey,
          authenticate: ({ username, certificate }) =>
            checkGatewayCertificate({
              username,
              certificate,
              relayName: config.name,
              clientCaPublicKey: bundle.ssh.clientCaPublicKey,
              now: new Date()
            }),
          keepalive: TUNNEL_KEEPALIVE,
          onAuthAttempt: (attempt) => {
            // Clients probe with `none` first (upstream's gateway does); that is not a failure.
            if (attempt.outcome !== "failure" || attempt.method === "none") return
            run(
              Effect.zipRight(
                Metric.increment(tagged(sshAuthFailures, "reason", authFailureLabel(attempt.reason))),
                Effect.logDebug("SSH authentication failed").pipe(Effect.annotateLogs({ user: attempt.username, reason: attempt.reason ?? attempt.method }))
              )
            )
          }
        })
        const auth = yield* settle(() => conn.authenticated)
        if (!auth.ok) {
          yield* Metric.increment(sshHandshakeFailures)
          const info = yield* Effect.promise(() => conn.closed)
          if (info.reason === AUTH_TIMEOUT_REASON) countConnectionRefused("ssh", "handshake_timeout")
          yield* Effect.logDebug("SSH connection closed before authentication").pipe(Effect.annotateLogs({ reason: info.reason }))
          return
        }
        const decision = auth.value.decision
        if (!decision.ok) return conn.close("not authorized")
        const { gatewayId, gatewayName } = decision.identity
        const tunnel = toTunnel(conn, gatewayId, gatewayName)
        const log = { gatewayId, gatewayName, kex: conn.info.kex, cipher: conn.info.cipherSC, mac: conn.info.macSC }
        const label = `Gateway ${gatewayName ? `${gatewayName} ` : ""}(${gatewayId})`
        yield* Effect.annotateCurrentSpan({
          "relay.gateway_id": gatewayId,
          "relay.gateway_name": gatewayName,
          "ssh.kex": conn.info.kex,
          "ssh.cipher": conn.info.cipherSC,
          "ssh.mac": conn.info.macSC
        })
        const registered = yield* register(tunnel)
        if (registered === "full") {
          yield* Metric.increment(tagged(tunnelConnections, "outcome", "max_tunnels"))
          const max = limits.current().maxTunnels
          if (warnDue("max_tunnels")) {
            yield* Effect.logWarning(`--max-tunnels (${max}) reached, refusing new gateways; further refusals are counted, not logged`)
          }
          yield* Effect.logDebug(`${label} refused: --max-tunnels reached`).pipe(Effect.annotateLogs(log))
          return conn.close("too many tunnels on this relay")
        }
        if (!registered) {
          yield* Effect.logWarning(`${label} already has an active connection, rejecting new connection`)
          yield* Metric.increment(tagged(tunnelConnections, "outcome", "duplicate_rejected"))
          return conn.close("gateway already connected")
        }
        yield* Metric.increment(tagged(tunnelConnections, "outcome", "accepted"))
        yield* Metric.increment(tunnelsConnected)
        yield* Effect.logInfo(`${label} connected`).pipe(Effect.annotateLogs(log))
        // At the certificate's expiry, close the tunnel if --disconnect-expired-tunnels is on then.
        // One timer and one promise, not two racing fibers: a tunnel's fibers are most of what an
        // idle tunnel costs the relay.
        const validBefore = auth.value.certificate.validBefore
        const closed = yield* Effect.async<CloseInfo>((resume) => {
          void conn.closed.then((info) => resume(Effect.succeed(info)))
          const cancel = validBefore === CERT_TIME_INFINITY ? undefined : atTime(Number(validBefore) * 1000, () => {
            if (!limits.current().disconnectExpiredTunnels) return
            conn.close("gateway certificate expired")
            run(Effect.zipRight(
              Metric.increment(tunnelsExpired),
              Effect.logInfo(`${label} certificate expired, disconnecting`).pipe(Effect.annotateLogs(log))
            ))
          })
          return Effect.sync(() => cancel?.())
        }).pipe(Effect.onInterrupt(() => Effect.sync(() => conn.close("relay shutting down"))))
        yield* tunnels.remove(tunnel)
        yield* Metric.incrementBy(tunnelsConnected, -1)
        yield* Effect.logInfo(`${label} disconnected`).pipe(Effect.annotateLogs({ ...log, reason: closed.reason }))
      }).pipe(
        Effect.withSpan("relay.tunnel", { captureStackTrace: false }),
        Effect.annotateLogs({ remote: socket.remoteAddress ?? "" })
      )

    const server = net.createServer({ noDelay: true })
    const admit = yield* makeAcceptGate(server, "ssh")
    server.on("connection", (socket) => {
      socket.on("error", () => socket.destroy())
      if (admit(socket)) run(serve(socket))
    })
    const bound = yield* bindListener(server, { label: "SSH", port: config.sshPort, host: config.listenHost })
    // While draining, live tunnels keep carrying their sessions; new gateway connections wait.
    yield* drain.register({ stopAccepting: Effect.sync(() => server.close()), idle: Effect.void })
    yield* Effect.logInfo(`SSH server listening on ${displayAddress(config.listenHost, bound.address)} for gateways`)
  })
)
