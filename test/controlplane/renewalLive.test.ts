/**
 * Certificate renewal and control-plane outages with real sockets: our relay's data plane
 * in-process over the real Credentials (registering with the in-process control plane), a Go
 * gateway peer (x/crypto/ssh, configured like Infisical's gateway) and backend-style mTLS clients.
 *
 * - 39: after `Credentials.renew`, a session opened before keeps flowing on the old certificate,
 *   a new TLS client gets the new certificate, and a new SSH connection gets the new host
 *   certificate; the gateway's existing SSH connection keeps carrying new sessions.
 * - 40 (live half; the schedule half is in schedules.test.ts): with the control plane gone,
 *   renewal fails without harm while a session keeps pumping and new sessions are accepted.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { execFile } from "node:child_process"
import { X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { promisify } from "node:util"
import { Duration, Effect, Exit, Layer, Logger, LogLevel, ManagedRuntime, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ControlPlaneWithAuthLive, RelayServerLive } from "../../src/App.ts"
import { Drain } from "../../src/relay/Drain.ts"
import { type CredentialBundle, Credentials, CredentialsLive } from "../../src/Credentials.ts"
import type { IssuedRelayClient } from "../../src/dev/ControlPlaneServer.ts"
import { RelayConfig, type RelayConfigShape, RelayMode } from "../../src/RelayConfig.ts"
import { splitPemChain } from "../../src/pki/x509.ts"
import { parseAuthorizedKeyLine } from "../../src/ssh/keys.ts"
import { PeerSet, type PeerProcess, spawnGoGateway } from "../support/goPeers.ts"
import { type ControlPlaneHandle, freePort, startControlPlane } from "./support.ts"

const SECRET = "renewal-live-secret"
const HOST = "127.0.0.1"
const NAME = "relay-renew-live"

let cp: ControlPlaneHandle
let relay: ManagedRuntime.ManagedRuntime<Credentials, unknown>
let sshPort = 0
let tlsPort = 0
const peers = new PeerSet()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-renew-live-"))

beforeAll(async () => {
  cp = await startControlPlane({ relayAuthSecret: SECRET })
  ;[sshPort, tlsPort] = [await freePort(), await freePort()]
  cp.tlsPorts.set(HOST, tlsPort)
  const config: RelayConfigShape = {
    name: NAME,
    mode: RelayMode.Instance({ host: HOST, authSecret: Redacted.make(SECRET) }),
    apiUrl: cp.apiUrl,
    statePath: path.join(dir, `${NAME}.conf`),
    customHeaders: [],
    listenHost: HOST,
    sshPort,
    tlsPort,
    statusAddress: Option.none(),
    heartbeat: { firstAfter: Duration.hours(1), retryEvery: Duration.hours(1), every: Duration.hours(1) },
    renewEvery: Duration.hours(6),
    drainTimeout: Duration.seconds(1)
  }
  relay = ManagedRuntime.make(
    RelayServerLive.pipe(
      Layer.provide(Layer.effect(Drain, Drain.make)),
      Layer.provideMerge(CredentialsLive),
      Layer.provide(ControlPlaneWithAuthLive),
      Layer.provide(RelayConfig.layer(config)),
      Layer.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)),
      Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
    )
  )
  await relay.runPromise(Effect.void)
})

afterAll(async () => {
  await peers.killAll()
  await relay?.dispose()
  await cp?.close()
})

const current = () => relay.runPromise(Effect.flatMap(Credentials, (c) => c.current))
const renew = () => relay.runPromise(Effect.exit(Effect.flatMap(Credentials, (c) => c.renew)))

/** A Go gateway registered through the control plane, connected to our relay. */
const connectGateway = async (name: string): Promise<{ gatewayId: string; peer: PeerProcess }> => {
  const identity = await cp.cp((c) => c.createIdentity({ name: `${name}-identity` }))
  const reg = await cp.cp((c) => c.registerGateway({ identityId: identity.identityId, relayName: NAME, name }))
  const write = (file: string, text: string) => {
    const p = path.join(dir, `${name}-${file}`)
    fs.writeFileSync(p, text, { mode: 0o600 })
    return p
  }
  const peer = await spawnGoGateway(peers, {
    addr: `127.0.0.1:${sshPort}`,
    user: reg.gatewayId,
    cert: write("id-cert.pub", reg.ssh.clientCertificate),
    key: write("id", reg.ssh.clientPrivateKey),
    hostPrincipal: `${reg.relayHost}:2222`,
    ca: write("server-ca.pub", reg.ssh.serverCAPublicKey),
    mode: "echo"
  }, name)
  await peer.waitForLine(/^READY/)
  return { gatewayId: reg.gatewayId, peer }
}

/** A backend-style client: outer mTLS to the relay with a relay-client certificate for `gatewayId`. */
const dial = (creds: IssuedRelayClient) =>
  new Promise<tls.TLSSocket>((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: tlsPort,
      servername: HOST,
      ca: splitPemChain(creds.serverCertificateChain),
      cert: creds.clientCertificate,
      key: creds.clientPrivateKey,
      minVersion: "TLSv1.2",
      rejectUnauthorized: true
    })
    socket.once("secureConnect", () => resolve(socket))
    socket.once("error", reject)
  })

/** Write `text` and read exactly its length back (the echo gateway). */
const roundTrip = (socket: tls.TLSSocket, text: string) =>
  new Promise<string>((resolve, reject) => {
    let got = ""
    const onData = (chunk: Buffer) => {
      got += chunk.toString()
      if (got.length >= text.length) {
        socket.off("data", onData)
        resolve(got)
      }
    }
    socket.on("data", onData)
    socket.once("error", reject)
    socket.once("close", () => reject(new Error(`closed after ${JSON.stringify(got)}`)))
    socket.write(text)
  })

const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256
const served = (socket: tls.TLSSocket) => socket.getPeerX509Certificate()!.fingerprint256

/** The relay's SSH host certificate as a fresh connection sees it (OpenSSH's ssh-keyscan). */
const scanHostCertificate = async (): Promise<Buffer> => {
  const { stdout } = await promisify(execFile)("ssh-keyscan", ["-c", "-t", "rsa", "-p", String(sshPort), "127.0.0.1"])
  const line = stdout.split("\n").find((l) => l.includes("-cert-v01@openssh.com"))
  if (!line) throw new Error(`no certificate from ssh-keyscan: ${stdout}`)
  // `-c` prints the certificate line alone (no host prefix).
  return parseAuthorizedKeyLine(line.slice(line.indexOf("ssh-rsa-cert-v01@openssh.com"))).blob
}

describe("renewal swaps certificates for new connections only", () => {
  it("39: an open session survives a renewal; new TLS and SSH connections get the new certificates", async () => {
    const { gatewayId, peer } = await connectGateway("gw-renew")
    const creds = await cp.cp((c) => c.issueRelayClient({ relay: NAME, gatewayId, gatewayName: "gw-renew" }))
    const before: CredentialBundle = await current()
    const oldTls = fingerprint(before.tls.cert as string)
    expect(Buffer.compare(await scanHostCertificate(), before.ssh.hostKey.certificate)).toBe(0)

    const sessionA = await dial(creds)
    expect(served(sessionA)).toBe(oldTls)
    expect(await roundTrip(sessionA, "before renewal")).toBe("before renewal")

    const renewed = await renew()
    expect(Exit.isSuccess(renewed)).toBe(true)
    const after = await current()
    const newTls = fingerprint(after.tls.cert as string)
    expect(newTls).not.toBe(oldTls)
    expect(after.ssh.hostKey.certificate.equals(before.ssh.hostKey.certificate)).toBe(false)

    // The old session is untouched.
    expect(await roundTrip(sessionA, "after renewal, same session")).toBe("after renewal, same session")
    // A new client handshakes with the new certificate, through the gateway's existing SSH connection.
    const sessionB = await dial(creds)
    expect(served(sessionB)).toBe(newTls)
    expect(await roundTrip(sessionB, "new session")).toBe("new session")
    expect(peer.lines.filter((l) => l.startsWith("READY"))).toHaveLength(1)
    // A new SSH connection is offered the new host certificate, and a new gateway accepts it.
    expect(Buffer.compare(await scanHostCertificate(), after.ssh.hostKey.certificate)).toBe(0)
    const second = await connectGateway("gw-after-renewal")
    const creds2 = await cp.cp((c) => c.issueRelayClient({ relay: NAME, gatewayId: second.gatewayId, gatewayName: "gw-after-renewal" }))
    const sessionC = await dial(creds2)
    expect(await roundTrip(sessionC, "second gateway")).toBe("second gateway")
    for (const s of [sessionA, sessionB, sessionC]) s.destroy()
  })
})

describe("the control plane down", () => {
  it("40: renewal fails harmlessly while traffic keeps flowing and new sessions are accepted", async () => {
    const { gatewayId } = await connectGateway("gw-outage")
    // Credentials a client got before the outage (the backend mints them; here, before it goes away).
    const creds = await cp.cp((c) => c.issueRelayClient({ relay: NAME, gatewayId, gatewayName: "gw-outage", validitySeconds: 3600 }))
    const session = await dial(creds)
    expect(await roundTrip(session, "ping 0")).toBe("ping 0")
    const before = await current()

    await cp.close()

    for (let i = 1; i <= 3; i++) {
      const failed = await renew()
      expect(Exit.isFailure(failed)).toBe(true)
      expect(String(Exit.isFailure(failed) ? failed.cause : "")).toContain("register relay")
      // The session pumps on: 64 KiB per round, crossing SSH window adjustments.
      const chunk = `round ${i} `.padEnd(64 * 1024, String(i))
      expect(await roundTrip(session, chunk)).toBe(chunk)
    }
    expect((await current()).receivedAt).toBe(before.receivedAt)
    const fresh = await dial(creds)
    expect(served(fresh)).toBe(fingerprint(before.tls.cert as string))
    expect(await roundTrip(fresh, "new session during the outage")).toBe("new session during the outage")
    session.destroy()
    fresh.destroy()
  })
})
