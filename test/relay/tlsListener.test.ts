/**
 * The client-facing TLS listener (checklist 22-29) against the real relay: what it presents, which
 * protocol versions and client certificates it accepts, and how it treats handshakes that stall,
 * bare TCP pings, garbage and heartbeat probes. Failed attempts must never get a byte of plaintext.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import type * as tls from "node:tls"
import { Effect, Exit, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { heartbeatProbes } from "../../src/observability/Metrics.ts"
import { ZERO_UUID } from "../../src/pki/profile.ts"
import { splitPemChain, x509 } from "../../src/pki/x509.ts"
import { bindListener, displayAddress } from "../../src/relay/Listener.ts"
import { TLS_HANDSHAKE_TIMEOUT_MS } from "../../src/relay/TlsListener.ts"
import { readAll } from "../support/goPeers.ts"
import { type ClientCredentials, eventually, type Gateway, type Harness, metricTotal, metricValue, startHarness } from "../support/relayHarness.ts"

/** Runs openssl with stdin at EOF (s_client then closes after the handshake); resolves with stdout. */
const openssl = (args: ReadonlyArray<string>) =>
  new Promise<string>((resolve, reject) => {
    const child = spawn("openssl", [...args], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", (c: Buffer) => (out += c.toString()))
    child.stderr.on("data", (c: Buffer) => (err += c.toString()))
    child.once("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`openssl exited ${code}: ${err}`))))
  })

let h: Harness
let echo: Gateway
beforeAll(async () => {
  h = await startHarness()
  echo = await h.quickGateway("echo")
})
afterAll(() => h?.close())

/** A session through the relay to the echo gateway, with `creds`. */
const echoWith = async (creds: ClientCredentials, message: string, options: tls.ConnectionOptions = {}) => {
  const socket = await h.dial(creds, options)
  const protocol = socket.getProtocol()
  const back = readAll(socket)
  socket.end(message)
  return { text: (await back).toString(), protocol }
}

interface Attempt {
  /** The client saw its side of the handshake complete. */
  readonly secure: boolean
  /** Error code seen by the client, if any. */
  readonly error: string | undefined
  /** Application bytes the client received. */
  readonly bytes: number
}

/** Dial and wait for the connection to end, recording what the client saw. */
const attempt = (creds: ClientCredentials | undefined, options: tls.ConnectionOptions = {}) =>
  new Promise<Attempt>((resolve) => {
    let secure = false
    let error: string | undefined
    let bytes = 0
    const p = h.dial(creds, options)
    p.then(
      (socket) => {
        secure = true
        socket.on("data", (c: Buffer) => (bytes += c.length))
        socket.on("error", (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message))
        socket.once("close", () => resolve({ secure, error, bytes }))
      },
      (e: NodeJS.ErrnoException) => resolve({ secure, error: e.code ?? e.message, bytes })
    )
  })

/** Raw TCP to the TLS port: send `bytes` (or nothing), collect what comes back until close. */
const raw = (send: Buffer | undefined, options: { readonly end?: boolean } = {}) =>
  new Promise<{ received: Buffer; ms: number; error: string | undefined }>((resolve) => {
    const started = Date.now()
    const chunks: Array<Buffer> = []
    let error: string | undefined
    const s = net.connect(h.tlsPort, "127.0.0.1", () => {
      if (send !== undefined) s.write(send)
      if (options.end === true) s.end()
    })
    s.on("data", (c: Buffer) => chunks.push(c))
    s.on("error", (e: NodeJS.ErrnoException) => (error = e.code))
    s.once("close", () => resolve({ received: Buffer.concat(chunks), ms: Date.now() - started, error }))
  })

const TLS_FAILURES = "relay_tls_handshake_failures_total"
const failures = () => metricTotal(TLS_FAILURES)
const failuresFor = (reason: string) => metricTotal(TLS_FAILURES, { reason })

describe("what the TLS listener presents (checklist 22-24)", () => {
  it("22. with no listen host (the default: no --listen-host), a listener binds every interface, dual stack", async () => {
    // Both listeners bind through bindListener with RelayConfig.listenHost, undefined unless set.
    const server = net.createServer((s) => s.end("hi"))
    const scope = Effect.runSync(Scope.make())
    const { address } = await Effect.runPromise(Scope.extend(bindListener(server, { label: "TLS", port: 0, host: undefined }), scope))
    try {
      expect(["::", "0.0.0.0"]).toContain(address.address)
      expect(displayAddress(undefined, address)).toBe(`:${address.port}`)
      const hello = (host: string) =>
        new Promise<string>((resolve, reject) => {
          const c = net.connect(address.port, host)
          let text = ""
          c.on("data", (d: Buffer) => (text += d.toString())).once("end", () => resolve(text)).once("error", reject)
        })
      expect(await hello("127.0.0.1")).toBe("hi")
      if (address.address === "::") expect(await hello("::1")).toBe("hi")
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("23. only the leaf certificate is sent (openssl s_client -showcerts)", async () => {
    const creds = await h.clientCredentials(echo.gatewayId)
    const dir = fs.mkdtempSync(path.join(h.dir, "sclient-"))
    const file = (name: string, text: string) => {
      fs.writeFileSync(path.join(dir, name), text)
      return path.join(dir, name)
    }
    const stdout = await openssl([
      "s_client", "-connect", `127.0.0.1:${h.tlsPort}`, "-showcerts", "-verify_return_error",
      "-CAfile", file("ca.pem", creds.ca.join("\n")), "-cert", file("c.pem", creds.cert), "-key", file("k.pem", creds.key)
    ])
    const sent = splitPemChain(stdout)
    expect(sent).toHaveLength(1)
    const leaf = new x509.X509Certificate(sent[0]!)
    expect(leaf.subject).toBe("CN=127.0.0.1, O=Infisical, OU=Relay")
    expect(stdout).toMatch(/Verify return code: 0 \(ok\)/)
  })

  it("23. TLS 1.2 and 1.3 are accepted; TLS 1.0 and 1.1 are refused", async () => {
    const creds = await h.clientCredentials(echo.gatewayId)
    expect(await echoWith(creds, "v12", { maxVersion: "TLSv1.2" })).toEqual({ text: "v12", protocol: "TLSv1.2" })
    expect(await echoWith(creds, "v13", { minVersion: "TLSv1.3" })).toEqual({ text: "v13", protocol: "TLSv1.3" })
    for (const version of ["TLSv1", "TLSv1.1"] as const) {
      const before = failures()
      const r = await attempt(creds, { minVersion: version, maxVersion: version, ciphers: "DEFAULT@SECLEVEL=0" })
      // The relay answers the ClientHello with a protocol_version alert.
      expect(r).toEqual({ secure: false, error: "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION", bytes: 0 })
      expect(failures()).toBe(before + 1)
    }
  })

  it("24. a backend-style client (ca = serverCertificateChain, servername = the IP, rejectUnauthorized) completes", async () => {
    const creds = await h.cp((c) => c.issueRelayClient({ relay: h.relayName, gatewayId: echo.gatewayId, gatewayName: "echo" }))
    const socket = await h.dial({ cert: creds.clientCertificate, key: creds.clientPrivateKey, ca: splitPemChain(creds.serverCertificateChain) })
    expect(socket.authorized).toBe(true)
    const back = readAll(socket)
    socket.end("backend")
    expect((await back).toString()).toBe("backend")
  })
})

describe("client certificates (checklist 25, 26)", () => {
  it("25. no client certificate, a foreign CA, or an expired certificate: refused, nothing written, no channel", async () => {
    const channels = echo.peer.lines.filter((l) => l.startsWith("CHANNEL ")).length
    const hourAgo = new Date(Date.now() - 3_600_000)
    const cases: ReadonlyArray<readonly [string, ClientCredentials | undefined]> = [
      ["no certificate", undefined],
      ["foreign CA", await h.clientCredentials(echo.gatewayId, { issuer: "foreign" })],
      ["expired", await h.clientCredentials(echo.gatewayId, { notBefore: new Date(hourAgo.getTime() - 60_000), notAfter: hourAgo })],
      ["not yet valid", await h.clientCredentials(echo.gatewayId, { notBefore: new Date(Date.now() + 3_600_000), notAfter: new Date(Date.now() + 7_200_000) })]
    ]
    for (const [name, creds] of cases) {
      for (const maxVersion of ["TLSv1.2", "TLSv1.3"] as const) {
        const before = failures()
        const r = await attempt(creds, { maxVersion })
        expect({ name, maxVersion, bytes: r.bytes }).toEqual({ name, maxVersion, bytes: 0 })
        expect({ name, maxVersion, counted: failures() - before }).toEqual({ name, maxVersion, counted: 1 })
      }
    }
    expect(failuresFor("CERT_HAS_EXPIRED")).toBe(2)
    expect(failuresFor("CERT_NOT_YET_VALID")).toBe(2)
    expect(echo.peer.lines.filter((l) => l.startsWith("CHANNEL ")).length).toBe(channels)
  })

  it("26. an EKU without clientAuth is refused; a certificate with no EKU extension is accepted", async () => {
    const before = failures()
    const r = await attempt(await h.clientCredentials(echo.gatewayId, { eku: "serverAuth" }))
    expect(r.bytes).toBe(0)
    expect(failures()).toBe(before + 1)
    expect(failuresFor("INVALID_PURPOSE")).toBe(1)

    const noEku = await h.clientCredentials(echo.gatewayId, { eku: "none" })
    expect((await echoWith(noEku, "no eku")).text).toBe("no eku")
  })
})

describe("connections that are not clients (checklist 27-29)", () => {
  it("27. a handshake that stalls is dropped after 5 s, while other sessions keep flowing", async () => {
    const creds = await h.clientCredentials(echo.gatewayId)
    const before = failures()
    // Half a TLS record header, then silence.
    const stalled = raw(Buffer.from([0x16, 0x03, 0x01]))
    let flowed = 0
    let stalledDone = false
    void stalled.then(() => (stalledDone = true))
    // Good traffic during the stall: sessions keep completing until the stalled one is dropped.
    while (!stalledDone) {
      const r = await echoWith(creds, `during ${flowed}`)
      expect(r.text).toBe(`during ${flowed}`)
      flowed++
    }
    const { received, ms } = await stalled
    expect(received.length).toBe(0)
    expect(ms).toBeGreaterThanOrEqual(TLS_HANDSHAKE_TIMEOUT_MS - 100)
    expect(ms).toBeLessThan(TLS_HANDSHAKE_TIMEOUT_MS + 2_000)
    expect(flowed).toBeGreaterThan(5)
    expect(failures()).toBe(before + 1)
  })

  it("28. a bare TCP connect-and-close and garbage bytes are handled quietly", async () => {
    const before = failures()
    // Closed at once, not held until the handshake deadline.
    const bare = await raw(undefined, { end: true })
    expect(bare.received.length).toBe(0)
    expect(bare.ms).toBeLessThan(TLS_HANDSHAKE_TIMEOUT_MS / 2)
    for (const garbage of [Buffer.from("GET / HTTP/1.1\r\nHost: relay\r\n\r\n"), Buffer.alloc(4096, 0xff), Buffer.from("SSH-2.0-OpenSSH_9.2\r\n")]) {
      const r = await raw(garbage)
      // At most a TLS alert record (content type 21), never plaintext; and no waiting for the deadline.
      if (r.received.length > 0) expect(r.received[0]).toBe(0x15)
      expect(r.ms).toBeLessThan(TLS_HANDSHAKE_TIMEOUT_MS / 2)
    }
    expect(failures()).toBeGreaterThanOrEqual(before + 3)
    // The listener is unaffected.
    expect((await echoWith(await h.clientCredentials(echo.gatewayId), "fine")).text).toBe("fine")
  })

  it("29. the zero-UUID heartbeat certificate completes the handshake and is closed without a channel", async () => {
    // A gateway whose id is the zero UUID: if the relay routed the probe, it would get a channel.
    const zero = await h.quickGateway("echo", { gatewayId: ZERO_UUID })
    const probesBefore = metricValue(heartbeatProbes)
    const pki = await h.cp((c) => c.relayPki({ kind: "instance" }))
    const probe = await pki.issueHeartbeatClient()
    for (const maxVersion of ["TLSv1.2", "TLSv1.3"] as const) {
      const r = await attempt({ cert: probe.clientCertificate, key: probe.clientPrivateKey, ca: splitPemChain(probe.serverCertificateChain) }, { maxVersion })
      expect(r).toMatchObject({ secure: true, bytes: 0 })
    }
    // The control plane's own probe marks the relay reachable.
    const relay = (await h.cp((c) => c.relays)).find((r) => r.name === h.relayName)!
    await h.cp((c) => c.probeRelay(relay.id))
    expect((await h.cp((c) => c.relays)).find((r) => r.name === h.relayName)?.heartbeat).not.toBeNull()
    // The probe completes at the client before the relay has read its certificate (TLS 1.3).
    await eventually(() => metricValue(heartbeatProbes) === probesBefore + 3, "three heartbeat probes")
    expect(zero.peer.lines.filter((l) => l.startsWith("CHANNEL"))).toEqual([])
  })
})
