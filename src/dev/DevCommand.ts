/**
 * `infisical relay dev`: the whole system on loopback, through the real code paths. An embedded
 * Infisical control plane issues certificates with the real profile; the relay registers with it
 * exactly as `relay start` does (same layer graph, over HTTP); a demo gateway connects over SSH;
 * then the control plane pings the gateway through the relay (outer mTLS -> relay -> SSH channel
 * -> gateway inner TLS, ALPN infisical-ping) and a bulk transfer runs through the same path to a
 * loopback echo target. It prints what happened and keeps running until Ctrl-C.
 */
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import type { Duplex } from "node:stream"
import { Console, Context, Duration, Effect, Layer, Metric, Option, Redacted, Schedule } from "effect"
import { relayLayer, startRelayLayers } from "../App.ts"
import { sessionBytes, sessionsActive, sessionsTotal, tagged } from "../observability/Metrics.ts"
import { defaultTimers, type ListenAddress, RelayMode, type RelayConfigShape } from "../RelayConfig.ts"
import * as ControlPlaneServer from "./ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane } from "./ControlPlaneServer.ts"
import { connectDemoGateway, DemoGatewayError } from "./DemoGateway.ts"

export interface DevOptions {
  readonly statusAddress: Option.Option<ListenAddress>
  readonly sshPort: Option.Option<number>
  readonly tlsPort: Option.Option<number>
  readonly transferMiB: number
}

const RELAY_NAME = "dev-relay"

/** A free loopback port: bind 0, read it, release it. */
export const freePort = Effect.async<number>((resume) => {
  const server = net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A loopback echo server: the target the demo gateway proxies the bulk transfer to. */
const echoServer = Effect.acquireRelease(
  Effect.async<net.Server>((resume) => {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => socket.destroy())
      socket.pipe(socket)
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.sync(() => server.close())
)

/** Send `bytes` through `socket` and read them back; returns whether the sha256 matched. */
const echoTransfer = (socket: Duplex, bytes: number) =>
  Effect.async<{ ok: boolean; received: number }>((resume) => {
    const sent = createHash("sha256")
    const got = createHash("sha256")
    let received = 0
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length
      got.update(chunk)
    })
    socket.on("end", () => resume(Effect.succeed({ ok: received === bytes && sent.digest("hex") === got.digest("hex"), received })))
    socket.on("error", () => resume(Effect.succeed({ ok: false, received })))
    const chunk = randomBytes(1024 * 1024)
    let left = bytes
    const pump = () => {
      while (left > 0) {
        const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
        left -= piece.length
        sent.update(piece)
        if (!socket.write(piece)) {
          socket.once("drain", pump)
          return
        }
      }
      socket.end()
    }
    pump()
  })

const mib = (n: number) => (n / (1024 * 1024)).toFixed(1)

export const runDev = (options: DevOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
      const sshPort = Option.isSome(options.sshPort) ? options.sshPort.value : yield* freePort
      const tlsPort = Option.isSome(options.tlsPort) ? options.tlsPort.value : yield* freePort
      const secret = randomBytes(24).toString("base64url")

      // 1. The embedded control plane; its probes dial our TLS port.
      const cpContext = yield* Layer.build(
        ControlPlaneServer.layer({
          relayAuthSecret: secret,
          relayTlsAddress: () => ({ host: "127.0.0.1", port: tlsPort }),
          host: "127.0.0.1",
          port: 0
        })
      )
      const cp = Context.get(cpContext, DevControlPlane)
      const endpoint = Context.get(cpContext, ControlPlaneEndpoint)

      // 2. The relay: the same layer graph as `relay start --type=instance`.
      const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "infisical-relay-dev-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(stateDir, { recursive: true, force: true })))
      const config: RelayConfigShape = {
        name: RELAY_NAME,
        mode: RelayMode.Instance({ host: "127.0.0.1", authSecret: Redacted.make(secret) }),
        apiUrl: endpoint.apiUrl,
        statePath: path.join(stateDir, `${RELAY_NAME}.conf`),
        customHeaders: [],
        listenHost: "127.0.0.1",
        sshPort,
        tlsPort,
        statusAddress: options.statusAddress,
        heartbeat: { ...defaultTimers.heartbeat, firstAfter: Duration.seconds(1), retryEvery: Duration.seconds(1) },
        renewEvery: defaultTimers.renewEvery,
        drainTimeout: Duration.seconds(5)
      }
      yield* startRelayLayers(config, relayLayer(config))

      // 3. A demo gateway, registered and connected like Infisical's gateway.
      const identity = yield* cp.createIdentity({ name: "demo-gateway-identity" })
      const registration = yield* cp.registerGateway({
        identityId: identity.identityId,
        relayName: RELAY_NAME,
        name: "demo-gateway"
      })
      const gateway = yield* connectDemoGateway(registration, { host: "127.0.0.1", port: sshPort })
      const info = gateway.connection.info

      // 4. The backend's gateway heartbeat through the relay.
      const pingStart = Date.now()
      yield* cp.pingGateway(gateway.gatewayId)
      const pingMs = Date.now() - pingStart

      // 5. A bulk transfer through the same path to a loopback echo target.
      const echo = yield* echoServer
      const bytes = options.transferMiB * 1024 * 1024
      const transferStart = Date.now()
      const transfer = yield* Effect.scoped(
        Effect.flatMap(
          cp.dialGateway(gateway.gatewayId, "infisical-tcp-proxy", {
            targetHost: "127.0.0.1",
            targetPort: (echo.address() as net.AddressInfo).port
          }),
          (socket) => echoTransfer(socket, bytes)
        )
      )
      const seconds = (Date.now() - transferStart) / 1000
      // The relay counts a session's bytes when its side has ended, which can be just after ours.
      yield* Metric.value(sessionsActive).pipe(
        Effect.filterOrFail((active) => active.value === 0),
        Effect.retry(Schedule.spaced(Duration.millis(20)).pipe(Schedule.upTo(Duration.seconds(5)))),
        Effect.ignore
      )
      const sessions = yield* Metric.value(sessionsTotal)
      const up = yield* Metric.value(tagged(sessionBytes, "direction", "client_to_gateway"))
      const down = yield* Metric.value(tagged(sessionBytes, "direction", "gateway_to_client"))

      yield* Console.log(
        [
          "",
          "infisical relay dev: control plane, relay and gateway on loopback, through the real code paths",
          `  control plane  ${endpoint.apiUrl}`,
          `  relay          ${RELAY_NAME}: ssh 127.0.0.1:${sshPort}, tls 127.0.0.1:${tlsPort}`,
          `  gateway        demo-gateway (${gateway.gatewayId}) connected over SSH: ${info.kex}, ${info.cipherCS}, ${info.macCS}`,
          `  ping           PONG in ${pingMs} ms (control plane -> relay mTLS -> SSH channel -> gateway TLS, ALPN infisical-ping;` +
            " includes minting the client certificates)",
          `  transfer       ${transfer.ok ? "ok" : `FAILED (${transfer.received} of ${bytes} bytes back)`}: ${mib(bytes)} MiB each way through the relay in ${seconds.toFixed(2)} s` +
            ` (${mib(bytes / seconds)} MiB/s with every hop's crypto in this one process), sha256 ${transfer.ok ? "equal" : "differs"}`,
          `  relay counted  ${sessions.count} sessions, ${mib(up.count)} MiB client->gateway, ${mib(down.count)} MiB gateway->client`,
          ...Option.match(options.statusAddress, {
            onNone: () => ["  status         off (add --status-addr 127.0.0.1:9090 for /metrics, /healthz, /readyz)"],
            onSome: (a) => [`  status         http://${a.host}:${a.port}/metrics  /healthz  /readyz`]
          }),
          "",
          "Press Ctrl-C to stop.",
          ""
        ].join("\n")
      )
      if (!transfer.ok) return yield* new DemoGatewayError({ detail: "the bulk transfer through the relay failed" })
      return yield* Effect.never
    })
  )
