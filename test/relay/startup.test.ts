/**
 * `relay start` as users run it: a subprocess against the in-process Infisical control plane
 * (help, startup, heartbeat, signals, bind failure), and in-process with a swapped ControlPlane
 * layer to show the layer graph `relay start` runs is the one under test.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { ConfigProvider, Deferred, Effect, Fiber, Layer, ManagedRuntime, Ref, Schema } from "effect"
import { X509Certificate } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { relayLayerWith } from "../../src/App.ts"
import { startRelay } from "../../src/Cli.ts"
import { RelayCredentialsResponse } from "../../src/controlplane/Api.ts"
import { ControlPlane } from "../../src/controlplane/ControlPlane.ts"
import * as ControlPlaneServer from "../../src/dev/ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane, makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import { relayServerCredentials } from "../../src/dev/relays.ts"
import { splitPemChain } from "../../src/pki/mint.ts"
import { freePort, startFlags } from "../support/relayHarness.ts"
import { spawnRelay } from "../support/relayProcess.ts"

const SECRET = "startup-test-secret"
const authorities = makeAuthorities()
/** Where each relay host's TLS listener really is (the relays bind random ports). */
const tlsPorts = new Map<string, number>()

type Services = DevControlPlane | ControlPlaneEndpoint
let runtime: ManagedRuntime.ManagedRuntime<Services, never>
let apiUrl = ""

beforeAll(async () => {
  runtime = ManagedRuntime.make(
    ControlPlaneServer.layer({
      authorities,
      relayAuthSecret: SECRET,
      relayTlsAddress: (host) => ({ host: "127.0.0.1", port: tlsPorts.get(host) ?? 1 }),
      host: "127.0.0.1",
      port: 0
    }) as Layer.Layer<Services>
  )
  apiUrl = (await runtime.runPromise(ControlPlaneEndpoint)).url
})
afterAll(() => runtime?.dispose())

const relayEnv = (home: string) => ({ HOME: home, INFISICAL_RELAY_STATE_DIR: `${home}/state`, INFISICAL_RELAY_AUTH_SECRET: SECRET })
const instanceArgs = (host: string, extra: ReadonlyArray<string> = []) => {
  const defaults = ["--ssh-port=0", "--tls-port=0", "--listen-host=127.0.0.1"].filter(
    (d) => !extra.some((e) => e.startsWith(d.split("=")[0]! + "="))
  )
  return ["relay", "start", "--type=instance", `--host=${host}`, `--name=${host.replace(/\W/g, "-")}`, `--domain=${apiUrl}`, ...defaults, ...extra]
}

describe("relay start as a subprocess", () => {
  it("--help lists every flag with its environment variable", async () => {
    const p = spawnRelay(["relay", "start", "--help"], { HOME: "/tmp" })
    expect((await p.exited).code).toBe(0)
    const help = p.output()
    for (const flag of [
      "--name", "--host", "--type", "--enroll-method", "--token", "--relay-id", "--domain", "--auth-method",
      "--client-id", "--client-secret", "--machine-identity-id", "--service-account-token-path",
      "--service-account-key-file-path", "--jwt", "--ssh-port", "--tls-port", "--listen-host", "--status-addr",
      "--heartbeat-interval", "--heartbeat-retry-interval", "--renew-interval", "--drain-timeout"
    ]) expect(help).toContain(flag)
    for (const env of [
      "INFISICAL_RELAY_NAME", "INFISICAL_RELAY_HOST", "INFISICAL_RELAY_TYPE", "INFISICAL_RELAY_ENROLL_METHOD",
      "INFISICAL_TOKEN", "INFISICAL_RELAY_ID", "INFISICAL_DOMAIN", "INFISICAL_AUTH_METHOD",
      "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "INFISICAL_MACHINE_IDENTITY_ID",
      "INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH", "INFISICAL_GCP_IAM_SERVICE_ACCOUNT_KEY_FILE_PATH",
      "INFISICAL_JWT", "INFISICAL_RELAY_SSH_PORT", "INFISICAL_RELAY_TLS_PORT", "INFISICAL_RELAY_LISTEN_HOST",
      "INFISICAL_RELAY_STATUS_ADDR", "INFISICAL_RELAY_HEARTBEAT_INTERVAL", "INFISICAL_RELAY_RENEW_INTERVAL",
      "INFISICAL_RELAY_DRAIN_TIMEOUT"
    ]) expect(help).toContain(env)
  })

  it("without a name exits 1 naming INFISICAL_RELAY_NAME", async () => {
    const p = spawnRelay(["relay", "start"], { HOME: "/tmp" })
    expect((await p.exited).code).toBe(1)
    expect(p.output()).toBe("error: please provide name flag\nunable to get name flag or INFISICAL_RELAY_NAME env\n")
  })

  it("registers, listens, heartbeats, and exits 0 on SIGTERM", async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "relay-start-"))
    const p = spawnRelay(instanceArgs("relay-a.test", ["--heartbeat-retry-interval=200ms"]), relayEnv(home))
    try {
      await p.waitFor(/Successfully registered relay and received certificates from API/)
      const tlsPort = Number((await p.waitFor(/TLS server listening on 127\.0\.0\.1:(\d+) for clients/))[1])
      tlsPorts.set("relay-a.test", tlsPort)
      await p.waitFor(/SSH server listening on 127\.0\.0\.1:\d+ for gateways/)
      await p.waitFor(/Relay server started successfully/)
      await p.waitFor(/Relay is reachable by Infisical/)
      const relays = await runtime.runPromise(Effect.flatMap(DevControlPlane, (cp) => cp.relays))
      expect(relays.find((r) => r.name === "relay-a-test")?.heartbeat).not.toBeNull()
      p.kill("SIGTERM")
      expect(await p.exited).toEqual({ code: 0, signal: null })
    } finally {
      p.kill()
    }
  })

  it("62. with only INFISICAL_API_URL, INFISICAL_RELAY_NAME, INFISICAL_RELAY_HOST, INFISICAL_TOKEN and HOME (no PATH): an org relay starts, registers and heartbeats", async () => {
    const identity = await runtime.runPromise(Effect.flatMap(DevControlPlane, (cp) => cp.createIdentity({ name: "e2e-relay-identity" })))
    const { accessToken } = await runtime.runPromise(
      Effect.flatMap(DevControlPlane, (cp) => cp.issueAccessToken(identity.identityId))
    )
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "relay-e2e-"))
    const [sshPort, tlsPort] = [await freePort(), await freePort()]
    tlsPorts.set("relay-e.test", tlsPort)
    // Our port flags stand in for the fixed 2222/8443 the e2e suite binds; the environment is upstream's list exactly.
    const p = spawnRelay(["relay", "start", `--ssh-port=${sshPort}`, `--tls-port=${tlsPort}`], {
      INFISICAL_API_URL: apiUrl,
      INFISICAL_RELAY_NAME: "e2e-relay",
      INFISICAL_RELAY_HOST: "relay-e.test",
      INFISICAL_TOKEN: accessToken,
      HOME: home
    }, { inheritPath: false })
    try {
      await p.waitFor(/Relay server started successfully/)
      await p.waitFor(/Relay is reachable by Infisical/, 60_000)
      const relays = await runtime.runPromise(Effect.flatMap(DevControlPlane, (cp) => cp.relays))
      const row = relays.find((r) => r.name === "e2e-relay")
      expect(row?.orgId).not.toBeNull()
      expect(row?.heartbeat).not.toBeNull()
    } finally {
      p.kill()
    }
  }, 90_000)

  it("exits 0 on SIGINT", async () => {
    const p = spawnRelay(instanceArgs("relay-b.test"), relayEnv("/tmp"))
    try {
      await p.waitFor(/Relay server started successfully/)
      p.kill("SIGINT")
      expect(await p.exited).toEqual({ code: 0, signal: null })
    } finally {
      p.kill()
    }
  })

  it("a port that cannot be bound exits 1 with one clear line", async () => {
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
    const port = (blocker.address() as net.AddressInfo).port
    const p = spawnRelay(instanceArgs("relay-c.test", [`--tls-port=${port}`]), relayEnv("/tmp"))
    try {
      expect((await p.exited).code).toBe(1)
      const lines = p.output().trim().split("\n")
      expect(lines.at(-1)).toMatch(new RegExp(`^Failed to start TLS server: listen EADDRINUSE: address already in use 127\\.0\\.0\\.1:${port}$`))
      expect(p.output()).not.toContain("Relay server started successfully")
    } finally {
      p.kill()
      blocker.close()
    }
  })
})

describe("the composed app with a swapped ControlPlane layer", () => {
  it("runs relay start's own layer graph: registers once, serves the issued certificate, heartbeats", async () => {
    const be = await runtime.runPromise(Effect.map(DevControlPlane, (cp) => cp.backend))
    const issued = Schema.decodeUnknownSync(RelayCredentialsResponse)(
      await Effect.runPromise(relayServerCredentials(be, { kind: "instance" }, "127.0.0.1"))
    )
    const registrations = Effect.runSync(Ref.make(0))
    const heartbeated = Effect.runSync(Deferred.make<void>())
    const fake = Layer.succeed(ControlPlane, {
      register: Ref.update(registrations, (n) => n + 1).pipe(Effect.as(issued)),
      heartbeat: Deferred.succeed(heartbeated, undefined)
    })
    const tlsPort = await freePort()
    const flags = startFlags({
      name: "swapped",
      host: "127.0.0.1",
      sshPort: "0",
      tlsPort: String(tlsPort),
      listenHost: "127.0.0.1",
      heartbeatRetryInterval: "50ms"
    })
    const fiber = Effect.runFork(
      startRelay(flags, relayLayerWith(fake)).pipe(
        Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)),
        Effect.withConfigProvider(
          ConfigProvider.fromMap(new Map([["INFISICAL_TOKEN", "t"], ["HOME", "/tmp"], ["INFISICAL_RELAY_STATE_DIR", "/tmp/swapped"]]))
        )
      )
    )
    try {
      const heartbeat = await runtime.runPromise(Effect.flatMap(DevControlPlane, (cp) => cp.relayPki({ kind: "instance" })))
      const probe = await heartbeat.issueHeartbeatClient()
      // Dial like the backend's relay heartbeat; retry until the listener is bound (bounded).
      let served: tls.PeerCertificate | undefined
      for (let attempt = 0; attempt < 200 && !served; attempt++) {
        served = await new Promise<tls.PeerCertificate | undefined>((resolve) => {
          const s = tls.connect({
            host: "127.0.0.1", port: tlsPort, servername: "127.0.0.1", ca: splitPemChain(probe.serverCertificateChain),
            cert: probe.clientCertificate, key: probe.clientPrivateKey, minVersion: "TLSv1.2", rejectUnauthorized: true
          })
          s.once("secureConnect", () => resolve(s.getPeerCertificate()))
          s.once("error", () => resolve(undefined))
          s.once("close", () => resolve(undefined))
        })
      }
      if (!served) throw new Error(`relay did not serve: ${JSON.stringify(Effect.runSync(Fiber.poll(fiber)))}`)
      expect(served?.raw.toString("base64")).toBe(
        Buffer.from(new X509Certificate(issued.pki.serverCertificate).raw).toString("base64")
      )
      await Effect.runPromise(Deferred.await(heartbeated).pipe(Effect.timeout("20 seconds")))
      expect(Effect.runSync(Ref.get(registrations))).toBe(1)
    } finally {
      await Effect.runPromise(Fiber.interrupt(fiber))
    }
  })
})
