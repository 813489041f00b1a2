/**
 * A relay as production runs it, for data-plane tests: the in-process Infisical control plane, our
 * relay's real layer graph in-process (registering over HTTP), and Go gateway peers registered
 * through the control plane like Infisical's gateway.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import type * as tls from "node:tls"
import { ConfigProvider, Effect, Exit, Fiber, Layer, ManagedRuntime, Option, Scope } from "effect"
import { relayLayer } from "../../src/App.ts"
import { startRelay } from "../../src/Cli.ts"
import type { StartFlags } from "../../src/cli/StartOptions.ts"
import * as ControlPlaneServer from "../../src/dev/ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane, makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import { type GatewayMode, PeerSet, type PeerProcess, spawnGoGateway } from "./goPeers.ts"

const SECRET = "harness-relay-secret"

/** A free loopback port (bind 0, read, close). */
export const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })

const noFlags = [
  "name", "host", "type", "enrollMethod", "token", "relayId", "domain", "authMethod", "clientId", "clientSecret",
  "machineIdentityId", "serviceAccountTokenPath", "serviceAccountKeyFilePath", "jwt", "sshPort", "tlsPort",
  "listenHost", "statusAddr", "heartbeatInterval", "heartbeatRetryInterval", "renewInterval"
] as const

export const startFlags = (values: Partial<Record<(typeof noFlags)[number], string>>): StartFlags =>
  Object.fromEntries(noFlags.map((k) => [k, values[k] === undefined ? Option.none() : Option.some(values[k])])) as unknown as StartFlags

export interface Harness {
  readonly cp: <A, E>(f: (cp: ControlPlaneServer.DevControlPlaneShape) => Effect.Effect<A, E, Scope.Scope>) => Promise<A>
  readonly relayName: string
  readonly sshPort: number
  readonly tlsPort: number
  readonly peers: PeerSet
  readonly dir: string
  /** Register a gateway with the control plane and connect a Go gateway peer in `mode`. */
  readonly connectGateway: (name: string, mode: GatewayMode, extra?: Record<string, string | number>) => Promise<{ gatewayId: string; peer: PeerProcess }>
  /** Dial the relay like the backend, with a relay-client certificate naming `gatewayId`. */
  readonly dialRelay: (gatewayId: string, gatewayName?: string) => Promise<tls.TLSSocket>
  readonly close: () => Promise<void>
}

export const startHarness = async (relayName = "test-relay"): Promise<Harness> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-harness-"))
  const [sshPort, tlsPort] = [await freePort(), await freePort()]
  const runtime = ManagedRuntime.make(
    ControlPlaneServer.layer({
      authorities: makeAuthorities(),
      relayAuthSecret: SECRET,
      relayTlsAddress: () => ({ host: "127.0.0.1", port: tlsPort }),
      host: "127.0.0.1",
      port: 0
    }) as Layer.Layer<DevControlPlane | ControlPlaneEndpoint>
  )
  const { url } = await runtime.runPromise(ControlPlaneEndpoint)
  const cp: Harness["cp"] = (f) => runtime.runPromise(Effect.scoped(Effect.flatMap(DevControlPlane, f)))

  const relay = Effect.runFork(
    startRelay(
      startFlags({
        name: relayName, host: "127.0.0.1", type: "instance", domain: url, sshPort: String(sshPort),
        tlsPort: String(tlsPort), listenHost: "127.0.0.1", heartbeatRetryInterval: "1h"
      }),
      relayLayer
    ).pipe(
      Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)),
      Effect.withConfigProvider(
        ConfigProvider.fromMap(new Map([["INFISICAL_RELAY_AUTH_SECRET", SECRET], ["HOME", dir], ["INFISICAL_RELAY_STATE_DIR", dir]]))
      )
    )
  )
  // The relay is up once the control plane has registered it and its TLS port answers.
  await runtime.runPromise(
    Effect.flatMap(DevControlPlane, (c) => c.relays).pipe(
      Effect.filterOrFail((rows) => rows.some((r) => r.name === relayName)),
      Effect.zipRight(Effect.tryPromise(() => new Promise<void>((resolve, reject) => {
        const s = net.connect(tlsPort, "127.0.0.1", () => { s.destroy(); resolve() })
        s.once("error", reject)
      }))),
      Effect.retry({ times: 400, schedule: (await import("effect")).Schedule.spaced("25 millis") }),
      Effect.timeout("30 seconds")
    )
  )
  const relayExit = Fiber.poll(relay)
  if (Option.isSome(Effect.runSync(relayExit))) throw new Error("relay exited during startup")

  const peers = new PeerSet()

  const connectGateway: Harness["connectGateway"] = async (name, mode, extra = {}) => {
    // Gateways are upserted per machine identity, so each gateway gets its own.
    const identity = await cp((c) => c.createIdentity({ name: `${name}-identity` }))
    const reg = await cp((c) => c.registerGateway({ identityId: identity.identityId, relayName, name }))
    const files = path.join(dir, name)
    fs.mkdirSync(files, { recursive: true })
    const write = (file: string, text: string) => {
      fs.writeFileSync(path.join(files, file), text, { mode: 0o600 })
      return path.join(files, file)
    }
    const peer = await spawnGoGateway(peers, {
      addr: `127.0.0.1:${sshPort}`,
      user: reg.gatewayId,
      cert: write("id-cert.pub", reg.ssh.clientCertificate),
      key: write("id", reg.ssh.clientPrivateKey),
      hostPrincipal: `${reg.relayHost}:2222`,
      ca: write("server-ca.pub", reg.ssh.serverCAPublicKey),
      mode,
      tls: {
        cert: write("tls.crt", reg.pki.serverCertificate),
        key: write("tls.key", reg.pki.serverPrivateKey),
        clientCa: write("tls-ca.crt", reg.pki.clientCertificateChain)
      },
      ...extra
    }, name)
    await peer.waitForLine(/^READY/)
    return { gatewayId: reg.gatewayId, peer }
  }

  const dialRelay: Harness["dialRelay"] = async (gatewayId, gatewayName = "gw") => {
    const creds = await cp((c) => c.issueRelayClient({ relay: relayName, gatewayId, gatewayName }))
    const tlsMod = await import("node:tls")
    return new Promise((resolve, reject) => {
      const socket = tlsMod.connect({
        host: "127.0.0.1", port: tlsPort, servername: "127.0.0.1",
        ca: creds.serverCertificateChain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!,
        cert: creds.clientCertificate, key: creds.clientPrivateKey, minVersion: "TLSv1.2", rejectUnauthorized: true
      })
      socket.once("secureConnect", () => resolve(socket))
      socket.once("error", reject)
    })
  }

  return {
    cp, relayName, sshPort, tlsPort, peers, dir, connectGateway, dialRelay,
    close: async () => {
      await peers.killAll()
      const exit = await Effect.runPromise(Fiber.interrupt(relay))
      if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) throw new Error(`relay failed: ${String(exit.cause)}`)
      await runtime.dispose()
    }
  }
}
