/**
 * A relay as production runs it, for data-plane tests: the in-process Infisical control plane, our
 * relay's real layer graph (in-process, or as an `infisical relay start` subprocess), and Go
 * gateway peers configured like Infisical's gateway.
 *
 * Gateways come two ways:
 * - `connectGateway`: registered through the control plane exactly like Infisical's gateway
 *   (new SSH key, user certificate, inner-TLS server certificate): realistic, ~0.2 s of RSA each;
 * - `quickGateway`: an SSH user certificate minted directly with the relay's SSH client CA for a
 *   key shared by every quick gateway: what scale tests use (a hundred gateways in a second).
 * Clients likewise: `dialRelay` uses relay client certificates minted with the relay's client CA
 * for one shared key (the control plane's own issuance makes a new RSA key per certificate), and
 * `clientCredentials` mints the odd ones negative tests need (no EKU, expired, foreign CA, ...).
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { ConfigProvider, Effect, Exit, Fiber, Layer, Logger, LogLevel, ManagedRuntime, Metric, Option, Schedule, type Scope } from "effect"
import { relayLayer } from "../../src/App.ts"
import { startRelay } from "../../src/Cli.ts"
import type { StartFlags } from "../../src/cli/StartOptions.ts"
import * as ControlPlaneServer from "../../src/dev/ControlPlaneServer.ts"
import { ControlPlaneEndpoint, DevControlPlane, makeAuthorities } from "../../src/dev/ControlPlaneServer.ts"
import { DEFAULT_USER_EXTENSIONS, generateRsaSshKey, relativeValidity, sshCertSerial } from "../../src/dev/sshIssue.ts"
import { RELAY_CONNECTING_GATEWAY_INFO_OID } from "../../src/pki/profile.ts"
import {
  authorityKeyIdentifier,
  clientAuth,
  createRootCa,
  generateRsaKeyPair,
  issueCertificate,
  keyUsage,
  keyUsageExtension,
  leafBasicConstraints,
  privateKeyToPem,
  serverAuth,
  splitPemChain,
  subjectKeyIdentifier,
  validityFromNow,
  x509,
  type CertifiedKey,
  type CryptoKeyPair
} from "../../src/pki/x509.ts"
import { limitSpecs } from "../../src/relay/Limits.ts"
import { CERT_TYPE_USER, signCertificate } from "../../src/ssh/certs.ts"
import { encodeOpenSshPrivateKey, formatAuthorizedKeyLine, publicKeyOf, type SshPrivateKey } from "../../src/ssh/keys.ts"
import { type GatewayMode, type GoGatewayOptions, PeerSet, type PeerProcess, spawnGoGateway } from "./goPeers.ts"
import { type RelayProcess, spawnRelay } from "./relayProcess.ts"

const SECRET = "harness-relay-secret"

/**
 * A free loopback port for a listener a test starts later (a relay subprocess's flags).
 *
 * Not "bind 0, read, close": that hands out a port from the kernel's ephemeral range
 * (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999), where any outgoing connection of any
 * test file running in parallel may take it as its local port before our listener binds
 * (EADDRINUSE, seen in CI). Ports here come from below that range, from a slice of its own per
 * vitest worker, never twice in a process, and are checked free by binding them.
 */
const PORTS_FROM = 20_000
const PORTS_TO = 32_000
const PORTS_PER_WORKER = 1_500
const handedOut = new Set<number>()

const bindable = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = net.createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

export const freePort = async (): Promise<number> => {
  const worker = Number(process.env["VITEST_POOL_ID"] ?? "1")
  const slices = Math.floor((PORTS_TO - PORTS_FROM) / PORTS_PER_WORKER)
  const first = PORTS_FROM + (((worker - 1) % slices + slices) % slices) * PORTS_PER_WORKER
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = first + Math.floor(Math.random() * PORTS_PER_WORKER)
    if (handedOut.has(port)) continue
    handedOut.add(port)
    if (await bindable(port)) return port
  }
  throw new Error(`no free port in ${first}-${first + PORTS_PER_WORKER - 1} after 200 attempts`)
}

const noFlags = [
  "name", "host", "type", "enrollMethod", "token", "relayId", "domain", "authMethod", "clientId", "clientSecret",
  "machineIdentityId", "serviceAccountTokenPath", "serviceAccountKeyFilePath", "jwt", "sshPort", "tlsPort",
  "listenHost", "statusAddr", "heartbeatInterval", "heartbeatRetryInterval", "renewInterval", "drainTimeout",
  "limitsFile", ...limitSpecs.map((s) => s.field)
] as const

export const startFlags = (values: Partial<Record<(typeof noFlags)[number], string>>): StartFlags =>
  Object.fromEntries(noFlags.map((k) => [k, values[k] === undefined ? Option.none() : Option.some(values[k])])) as unknown as StartFlags

/** Current value of a counter or gauge of src/observability/Metrics.ts (in-process relays only). */
export const metricValue = (metric: Metric.Metric.Counter<number> | Metric.Metric.Gauge<number>): number => {
  const state = Effect.runSync(Metric.value(metric as Metric.Metric.Counter<number>)) as { count?: number; value?: number }
  return state.count ?? state.value ?? 0
}

/**
 * Sum of the metric named `name` (Prometheus name) over all its tag values (e.g. every `reason` of
 * a counter), optionally only the series carrying `tags`. In-process relays only.
 */
export const metricTotal = (name: string, tags: Record<string, string> = {}): number => {
  let total = 0
  for (const pair of Metric.unsafeSnapshot()) {
    if (pair.metricKey.name !== name) continue
    if (!Object.entries(tags).every(([k, v]) => pair.metricKey.tags.some((t) => t.key === k && t.value === v))) continue
    const state = pair.metricState as { count?: number; value?: number }
    total += state.count ?? state.value ?? 0
  }
  return total
}

/**
 * Waits (bounded) until `check` holds. Only for relay-internal state that emits no event a test
 * can wait on (metrics updated by a fiber after the client already saw its side finish).
 */
export const eventually = async (check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Files a Go gateway peer needs (paths), so another peer can reuse the same certificate. */
export interface GatewayFiles {
  readonly gatewayId: string
  readonly cert: string
  readonly key: string
  readonly ca: string
  readonly hostPrincipal: string
  readonly tls?: { readonly cert: string; readonly key: string; readonly clientCa: string }
}

export interface Gateway {
  readonly gatewayId: string
  readonly peer: PeerProcess
  readonly files: GatewayFiles
}

export type PeerOptions = Partial<Omit<GoGatewayOptions, "addr" | "user" | "cert" | "key" | "mode">>

/** Relay client material for one connection attempt. */
export interface ClientCredentials {
  readonly cert: string
  readonly key: string
  /** Trust anchors for the relay's server certificate. */
  readonly ca: ReadonlyArray<string>
}

export interface ClientCertOptions {
  /** Subject CN (default: the gateway id passed). */
  readonly gatewayName?: string
  /** Raw extnValue of 1.3.6.1.4.1.12345.100.3 (default `{"name":gatewayName}`); null leaves it out. */
  readonly gatewayInfo?: string | null
  /** EKU: clientAuth (default), serverAuth only, or no EKU extension at all. */
  readonly eku?: "clientAuth" | "serverAuth" | "none"
  readonly notBefore?: Date
  readonly notAfter?: Date
  /** Sign with the relay's client CA (default) or an unrelated CA with the same names. */
  readonly issuer?: "relay" | "foreign"
  /** Subject O, the organisation the relay counts sessions against (default "harness-org"). */
  readonly org?: string
}

export interface HarnessOptions {
  readonly relayName?: string
  /** Run the relay as an `infisical relay start` subprocess instead of in this process. */
  readonly subprocess?: boolean
  /** Extra `relay start` arguments for the subprocess. */
  readonly relayArgs?: ReadonlyArray<string>
  /** Extra `relay start` flags for the in-process relay, e.g. `{ maxTunnels: "2" }`. */
  readonly relayFlags?: Partial<Record<(typeof noFlags)[number], string>>
}

export interface Harness {
  readonly cp: <A, E>(f: (cp: ControlPlaneServer.DevControlPlaneShape) => Effect.Effect<A, E, Scope.Scope>) => Promise<A>
  readonly relayName: string
  readonly sshPort: number
  readonly tlsPort: number
  readonly peers: PeerSet
  readonly dir: string
  /** The relay subprocess, when started with `subprocess: true`. */
  readonly relayProcess: RelayProcess | undefined
  /** Register a gateway with the control plane and connect a Go gateway peer in `mode`. */
  readonly connectGateway: (name: string, mode: GatewayMode, extra?: PeerOptions) => Promise<Gateway>
  /** A gateway with a directly minted certificate (shared key); `gatewayId` defaults to a new UUID. */
  readonly quickGateway: (mode: GatewayMode, options?: { readonly gatewayId?: string; readonly peer?: PeerOptions; readonly ready?: boolean; readonly validitySeconds?: number }) => Promise<Gateway>
  /**
   * An SSH user certificate for `gatewayId` signed by the relay's client CA (what quick gateways
   * use), valid for `validitySeconds` (default a day), with its private key: for hand-made gateways.
   */
  readonly gatewayCertificate: (gatewayId: string, options?: { readonly validitySeconds?: number }) => { readonly certificate: Buffer; readonly privateKey: SshPrivateKey }
  /** Another Go peer with the same certificate as `files` (a reconnect of the same gateway). */
  readonly spawnPeer: (files: GatewayFiles, mode: GatewayMode, extra?: PeerOptions, label?: string) => Promise<PeerProcess>
  /** Relay client material for `gatewayId` (minted for a shared key; cached per gateway id). */
  readonly clientCredentials: (gatewayId: string, options?: ClientCertOptions) => Promise<ClientCredentials>
  /** Dial the relay like the backend does; resolves on `secureConnect`. */
  readonly dial: (credentials: ClientCredentials | undefined, options?: tls.ConnectionOptions) => Promise<tls.TLSSocket>
  /** Dial the relay like the backend, with a relay-client certificate naming `gatewayId`. */
  readonly dialRelay: (gatewayId: string, gatewayName?: string) => Promise<tls.TLSSocket>
  /** Shut the dev control plane down (its port then refuses); `cp` fails from then on. */
  readonly stopControlPlane: () => Promise<void>
  readonly close: () => Promise<void>
}

export const startHarness = async (options: HarnessOptions | string = {}): Promise<Harness> => {
  const o: HarnessOptions = typeof options === "string" ? { relayName: options } : options
  const relayName = o.relayName ?? "test-relay"
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

  // Material for quick gateways and clients, made while the relay starts.
  const material = Promise.all([
    cp((c) => c.relayPki({ kind: "instance" })),
    cp((c) => c.sshCas({ kind: "instance" })),
    generateRsaSshKey(2048),
    generateRsaKeyPair(2048)
  ])
  material.catch(() => {}) // awaited below; never an unhandled rejection if the relay fails to start

  let relayProcess: RelayProcess | undefined
  let relayFiber: Fiber.RuntimeFiber<unknown, unknown> | undefined
  const stopRelay = async () => {
    if (relayFiber) {
      const exit = await Effect.runPromise(Fiber.interrupt(relayFiber))
      if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) throw new Error(`relay failed: ${String(exit.cause)}`)
    }
    if (relayProcess) {
      relayProcess.kill("SIGKILL")
      await relayProcess.exited
    }
  }
  try {
    if (o.subprocess === true) {
      relayProcess = spawnRelay(
        [
          "relay", "start", "--type=instance", "--host=127.0.0.1", `--name=${relayName}`, `--domain=${url}`,
          `--ssh-port=${sshPort}`, `--tls-port=${tlsPort}`, "--listen-host=127.0.0.1",
          // No heartbeat during a test unless it asks for one (the CLI refuses a repeated flag).
          ...(o.relayArgs?.some((a) => a.startsWith("--heartbeat-retry-interval")) === true ? [] : ["--heartbeat-retry-interval=1h"]),
          // Every peer of a test dials from 127.0.0.1: no per-address accept rate unless the test sets one.
          ...["--ssh-accept-rate=0", "--tls-accept-rate=0"].filter((d) => o.relayArgs?.some((a) => a.startsWith(d.split("=")[0]!)) !== true),
          ...(o.relayArgs ?? [])
        ],
        { HOME: dir, INFISICAL_RELAY_STATE_DIR: path.join(dir, "state"), INFISICAL_RELAY_AUTH_SECRET: SECRET }
      )
      await relayProcess.waitFor(/Relay server started successfully/, 60_000)
    } else {
      relayFiber = Effect.runFork(
        startRelay(
          startFlags({
            name: relayName, host: "127.0.0.1", type: "instance", domain: url, sshPort: String(sshPort),
            tlsPort: String(tlsPort), listenHost: "127.0.0.1", heartbeatRetryInterval: "1h",
            // Every peer of a test dials from 127.0.0.1: no per-address accept rate unless the test sets one.
            sshAcceptRate: "0", tlsAcceptRate: "0",
            ...o.relayFlags
          }),
          relayLayer
        ).pipe(
          Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)),
          Logger.withMinimumLogLevel(process.env["RELAY_TEST_LOG"] === "1" ? LogLevel.Debug : LogLevel.Warning),
          Effect.withConfigProvider(
            ConfigProvider.fromMap(new Map([["INFISICAL_RELAY_AUTH_SECRET", SECRET], ["HOME", dir], ["INFISICAL_RELAY_STATE_DIR", dir]]))
          )
        )
      )
    }
    // The relay is up once the control plane has registered it and its TLS port answers.
    await runtime.runPromise(
      Effect.flatMap(DevControlPlane, (c) => c.relays).pipe(
        Effect.filterOrFail((rows) => rows.some((r) => r.name === relayName)),
        Effect.zipRight(Effect.tryPromise(() => new Promise<void>((resolve, reject) => {
          const s = net.connect(tlsPort, "127.0.0.1", () => { s.destroy(); resolve() })
          s.once("error", reject)
        }))),
        Effect.retry({ times: 400, schedule: Schedule.spaced("25 millis") }),
        Effect.timeout("30 seconds")
      )
    )
    if (relayFiber && Option.isSome(Effect.runSync(Fiber.poll(relayFiber)))) throw new Error("relay exited during startup")
  } catch (e) {
    // Nothing may outlive a failed start (the caller never gets a harness to close).
    await stopRelay().catch(() => {})
    await runtime.dispose()
    fs.rmSync(dir, { recursive: true, force: true })
    throw e
  }

  const [relayPki, sshCas, gatewayKey, clientKeys] = await material
  const serverChain = splitPemChain(relayPki.serverCertificateChain)
  const clientKeyPem = privateKeyToPem(clientKeys.privateKey)
  const peers = new PeerSet()
  const hostPrincipal = "127.0.0.1:2222"

  const writer = (name: string) => {
    const files = path.join(dir, name)
    fs.mkdirSync(files, { recursive: true })
    return (file: string, text: string) => {
      fs.writeFileSync(path.join(files, file), text, { mode: 0o600 })
      return path.join(files, file)
    }
  }
  const serverCa = writer("shared")("server-ca.pub", sshCas.server.publicKey)
  const sharedKey = writer("shared")("gateway-key", encodeOpenSshPrivateKey(gatewayKey, "harness"))

  const spawnPeer: Harness["spawnPeer"] = (files, mode, extra = {}, label) =>
    spawnGoGateway(peers, {
      addr: `127.0.0.1:${sshPort}`,
      user: files.gatewayId,
      cert: files.cert,
      key: files.key,
      hostPrincipal: files.hostPrincipal,
      ca: files.ca,
      mode,
      ...(files.tls === undefined ? {} : { tls: files.tls }),
      ...extra
    }, label ?? `gateway-${files.gatewayId.slice(0, 8)}`)

  const connectGateway: Harness["connectGateway"] = async (name, mode, extra = {}) => {
    // Gateways are upserted per machine identity, so each gateway gets its own.
    const identity = await cp((c) => c.createIdentity({ name: `${name}-identity` }))
    const reg = await cp((c) => c.registerGateway({ identityId: identity.identityId, relayName, name }))
    const write = writer(name)
    const files: GatewayFiles = {
      gatewayId: reg.gatewayId,
      cert: write("id-cert.pub", reg.ssh.clientCertificate),
      key: write("id", reg.ssh.clientPrivateKey),
      hostPrincipal: `${reg.relayHost}:2222`,
      ca: write("server-ca.pub", reg.ssh.serverCAPublicKey),
      tls: {
        cert: write("tls.crt", reg.pki.serverCertificate),
        key: write("tls.key", reg.pki.serverPrivateKey),
        clientCa: write("tls-ca.crt", reg.pki.clientCertificateChain)
      }
    }
    const peer = await spawnPeer(files, mode, extra, name)
    await peer.waitForLine(/^READY/)
    return { gatewayId: reg.gatewayId, peer, files }
  }

  const gatewayCertificate: Harness["gatewayCertificate"] = (gatewayId, options = {}) => ({
    certificate: signCertificate(
      publicKeyOf(gatewayKey),
      {
        certType: CERT_TYPE_USER,
        keyId: `client-${relayName}`,
        principals: [gatewayId],
        ...relativeValidity(options.validitySeconds ?? 24 * 60 * 60),
        serial: sshCertSerial(),
        extensions: DEFAULT_USER_EXTENSIONS.map((n) => [n, new Uint8Array(0)] as const)
      },
      sshCas.client.key,
      "rsa-sha2-512"
    ),
    privateKey: gatewayKey
  })

  const quickGateway: Harness["quickGateway"] = async (mode, options = {}) => {
    const gatewayId = options.gatewayId ?? randomUUID()
    const blob = gatewayCertificate(gatewayId, options.validitySeconds === undefined ? {} : { validitySeconds: options.validitySeconds }).certificate
    const files: GatewayFiles = {
      gatewayId,
      cert: writer(`quick-${gatewayId}`)("id-cert.pub", formatAuthorizedKeyLine("ssh-rsa-cert-v01@openssh.com", blob, "harness") + "\n"),
      key: sharedKey,
      ca: serverCa,
      hostPrincipal
    }
    const peer = await spawnPeer(files, mode, options.peer ?? {})
    if (options.ready !== false) await peer.waitForLine(/^READY/)
    return { gatewayId, peer, files }
  }

  // An unrelated CA with the same subject as the relay client CA, for "foreign CA" clients.
  let foreignCa: Promise<CertifiedKey> | undefined
  const clientCache = new Map<string, ClientCredentials>()

  const mintClient = async (gatewayId: string, c: ClientCertOptions, keys: CryptoKeyPair): Promise<string> => {
    const issuer = c.issuer === "foreign"
      ? await (foreignCa ??= createRootCa([["O", "Infisical"], ["CN", "Infisical Instance Relay Client CA"]]))
      : relayPki.clientCa
    const gatewayInfo = c.gatewayInfo === undefined ? JSON.stringify({ name: c.gatewayName ?? "gw" }) : c.gatewayInfo
    const eku = c.eku ?? "clientAuth"
    const validity = validityFromNow(300)
    const leaf = await issueCertificate({
      subject: [["O", c.org ?? "harness-org"], ["OU", "relay-client"], ["CN", gatewayId]],
      issuer,
      keys,
      notBefore: c.notBefore ?? validity.notBefore,
      notAfter: c.notAfter ?? validity.notAfter,
      extensions: [
        leafBasicConstraints(),
        await authorityKeyIdentifier(issuer.certificate),
        await subjectKeyIdentifier(keys.publicKey),
        keyUsageExtension(keyUsage.clientLeaf),
        ...(eku === "clientAuth" ? [clientAuth()] : eku === "serverAuth" ? [serverAuth()] : []),
        ...(gatewayInfo === null
          ? []
          : [new x509.Extension(RELAY_CONNECTING_GATEWAY_INFO_OID, false, Buffer.from(gatewayInfo, "utf8"))])
      ]
    })
    return leaf.certificatePem
  }

  const clientCredentials: Harness["clientCredentials"] = async (gatewayId, c = {}) => {
    const plain = Object.keys(c).length === 0
    const cached = plain ? clientCache.get(gatewayId) : undefined
    if (cached) return cached
    const creds: ClientCredentials = { cert: await mintClient(gatewayId, c, clientKeys), key: clientKeyPem, ca: serverChain }
    if (plain) clientCache.set(gatewayId, creds)
    return creds
  }

  // Client contexts, reused across connections with the same credentials (parsing the key and the
  // CA chain costs more than the rest of a client's handshake).
  const contexts = new WeakMap<ClientCredentials, tls.SecureContext>()
  // Client sockets still open at close() are destroyed first: stopping the relay under them would
  // reset them, an 'error' nobody listens for once the test is done with them.
  const clients = new Set<tls.TLSSocket>()
  const dial: Harness["dial"] = (creds, extra = {}) =>
    new Promise((resolve, reject) => {
      const contextOptions: tls.SecureContextOptions = {
        ca: [...(creds?.ca ?? serverChain)],
        ...(creds === undefined ? {} : { cert: creds.cert, key: creds.key }),
        minVersion: "TLSv1.2"
      }
      let secureContext: tls.SecureContext | undefined
      if (creds !== undefined && Object.keys(extra).length === 0) {
        secureContext = contexts.get(creds) ?? tls.createSecureContext(contextOptions)
        contexts.set(creds, secureContext)
      }
      const socket = tls.connect({
        host: "127.0.0.1", port: tlsPort, servername: "127.0.0.1", rejectUnauthorized: true,
        ...(secureContext === undefined ? contextOptions : { secureContext }),
        ...extra
      })
      clients.add(socket)
      socket.once("close", () => clients.delete(socket))
      socket.once("secureConnect", () => {
        socket.off("error", reject)
        resolve(socket)
      })
      socket.once("error", reject)
    })

  const dialRelay: Harness["dialRelay"] = async (gatewayId, gatewayName) =>
    dial(await clientCredentials(gatewayId, gatewayName === undefined ? {} : { gatewayName }))

  return {
    cp, relayName, sshPort, tlsPort, peers, dir, relayProcess,
    connectGateway, quickGateway, gatewayCertificate, spawnPeer, clientCredentials, dial, dialRelay,
    stopControlPlane: () => runtime.dispose(), // idempotent: close() disposes again
    close: async () => {
      for (const socket of clients) socket.destroy()
      await peers.killAll()
      await stopRelay()
      await runtime.dispose()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}
