/**
 * Our client against our server over loopback TCP: every algorithm combination, rekeying in both
 * directions mid-transfer, bulk transfer integrity, many channels, flow control, connection
 * protocol answers. (Interop with independent implementations is in openssh*.test.ts.)
 */
import { createHash, randomBytes } from "node:crypto"
import { connect } from "node:net"
import { Duplex, Writable } from "node:stream"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CIPHER_ALGORITHMS, KEX_ALGORITHMS, MAC_ALGORITHMS, isAeadCipher } from "../../src/ssh/algorithms.ts"
import { CERT_TYPE_HOST, CERT_TYPE_USER, verifyCertificateSignature, type SshCertificate } from "../../src/ssh/certs.ts"
import type { SshChannel } from "../../src/ssh/channel.ts"
import { connectSsh, type ClientOptions, type SshClientConnection } from "../../src/ssh/client.ts"
import { ChannelOpenError } from "../../src/ssh/connection.ts"
import { DISCONNECT, OPEN_FAILURE } from "../../src/ssh/constants.ts"
import { generateSshKey } from "../../src/ssh/keys.ts"
import { Transport } from "../../src/ssh/transport.ts"
import type { AuthAttempt, AuthContext, ServerOptions, SshServerConnection } from "../../src/ssh/server.ts"
import {
  connectTestClient,
  issueCertificate,
  makeTestPki,
  startTestServer,
  type TestPki,
  type TestServer
} from "../../src/ssh/testkit.ts"

type Decision = { ok: true; id: string } | { ok: false; reason: string }

const policy =
  (pki: TestPki) =>
  ({ username, certificate }: AuthContext): Decision => {
    if (certificate.certType !== CERT_TYPE_USER) return { ok: false, reason: "not a user certificate" }
    if (!certificate.signatureKey.equals(pki.userCa.publicBlob)) return { ok: false, reason: "unknown CA" }
    if (!certificate.principals.includes(username)) return { ok: false, reason: "principal" }
    return { ok: true, id: certificate.principals[0]! }
  }

const hostCheck = (pki: TestPki) => (cert: SshCertificate) =>
  cert.certType === CERT_TYPE_HOST && cert.signatureKey.equals(pki.hostCa.publicBlob) && verifyCertificateSignature(cert)

interface Pair {
  readonly server: SshServerConnection<Decision>
  readonly client: SshClientConnection
  /** channels the server opened, as seen by the client */
  readonly accepted: Array<SshChannel>
  nextAccepted(): Promise<SshChannel>
}

const collect = (stream: NodeJS.ReadableStream): Promise<{ bytes: number; sha: string }> =>
  new Promise((resolve, reject) => {
    const h = createHash("sha256")
    let bytes = 0
    stream.on("data", (d: Buffer) => {
      bytes += d.length
      h.update(d)
    })
    stream.on("end", () => resolve({ bytes, sha: h.digest("hex") }))
    stream.on("error", reject)
  })

/** Write `total` random bytes in 1 MiB blocks honouring backpressure, then end(). Returns the sha256. */
const produce = async (ch: SshChannel, total: number, _seed: number, onBlock?: (i: number) => void) => {
  const h = createHash("sha256")
  const base = randomBytes(1 << 20)
  for (let i = 0, sent = 0; sent < total; i++) {
    const n = Math.min(base.length, total - sent)
    const b = Buffer.from(base.subarray(0, n))
    b.writeUInt32LE(i, 0) // every block differs
    h.update(b)
    sent += n
    onBlock?.(i)
    if (!ch.write(b)) await new Promise((r) => ch.once("drain", r))
  }
  ch.end()
  return h.digest("hex")
}

describe("our client <-> our server", () => {
  let pki: TestPki
  let srv: TestServer<Decision>
  let serverOptions: Partial<ServerOptions<Decision>> = {}
  const attempts: Array<AuthAttempt> = []

  beforeAll(async () => {
    pki = makeTestPki()
    srv = await startTestServer<Decision>(() => ({
      hostKey: { certificate: pki.hostCertificate, privateKey: pki.hostKey.key },
      authenticate: policy(pki),
      onAuthAttempt: (a) => attempts.push(a),
      ...serverOptions
    }))
  })
  afterAll(() => srv.close())

  const pair = async (options: Partial<ClientOptions> = {}): Promise<Pair> => {
    const accepted: Array<SshChannel> = []
    const waiters: Array<(c: SshChannel) => void> = []
    let taken = 0
    const serverConn = srv.nextConnection()
    const client = connectTestClient(srv.port, {
      username: "gateway-1",
      certificate: pki.userCertificate,
      privateKey: pki.userKey,
      hostKeyCheck: hostCheck(pki),
      onDirectTcpip: (ch) => {
        accepted.push(ch)
        waiters.shift()?.(ch)
      },
      ...options
    })
    const server = await serverConn
    await client.authenticated
    await server.authenticated
    return {
      server,
      client,
      accepted,
      nextAccepted: () =>
        accepted.length > taken
          ? Promise.resolve(accepted[taken++]!)
          : new Promise((r) =>
              waiters.push((c) => {
                taken++
                r(c)
              })
            )
    }
  }

  const closePair = async (p: Pair) => {
    p.client.close()
    await p.server.closed
    await p.client.closed
  }

  it("negotiates and carries data with every kex x cipher x MAC combination", async () => {
    const combos: Array<{ kex: string; cipher: string; mac: string }> = []
    for (const kex of KEX_ALGORITHMS)
      for (const cipher of CIPHER_ALGORITHMS)
        for (const mac of isAeadCipher(cipher) ? [MAC_ALGORITHMS[0]!] : MAC_ALGORITHMS) combos.push({ kex, cipher, mac })
    expect(combos.length).toBe(KEX_ALGORITHMS.length * 14)
    const payload = randomBytes(200_000)
    for (const c of combos) {
      const p = await pair({ algorithms: { kex: [c.kex], cipher: [c.cipher], mac: [c.mac] } })
      const info = p.server.info
      expect(info.kex).toBe(c.kex)
      expect(info.cipherCS).toBe(c.cipher)
      expect(info.cipherSC).toBe(c.cipher)
      expect(info.macCS).toBe(isAeadCipher(c.cipher) ? "<implicit>" : c.mac)
      expect(info.strictKex).toBe(true)
      expect(p.client.info.kex).toBe(c.kex)
      const ch = await p.server.openDirectTcpip()
      const peer = await p.nextAccepted()
      peer.pipe(peer) // echo
      const got = collect(ch)
      ch.end(payload)
      const r = await got
      expect(r.bytes).toBe(payload.length)
      expect(r.sha).toBe(createHash("sha256").update(payload).digest("hex"))
      await closePair(p)
    }
  })

  it("offers and verifies every host key algorithm and publickey algorithm of an RSA certificate", async () => {
    for (const hostKey of [
      "rsa-sha2-512-cert-v01@openssh.com",
      "rsa-sha2-256-cert-v01@openssh.com",
      "ssh-rsa-cert-v01@openssh.com"
    ]) {
      for (const publicKeyAlgorithm of [
        "rsa-sha2-256-cert-v01@openssh.com",
        "rsa-sha2-512-cert-v01@openssh.com",
        "ssh-rsa-cert-v01@openssh.com"
      ]) {
        const before = attempts.length
        const p = await pair({ algorithms: { hostKey: [hostKey] }, publicKeyAlgorithm })
        expect(p.server.info.hostKeyAlgorithm).toBe(hostKey)
        const a = await p.server.authenticated
        expect(a.publicKeyAlgorithm).toBe(publicKeyAlgorithm)
        expect(a.decision).toEqual({ ok: true, id: "gateway-1" })
        expect(attempts.slice(before).map((x) => x.outcome)).toEqual(["failure", "success"]) // none, then publickey
        await closePair(p)
      }
    }
  })

  it("the client picks rsa-sha2-256-cert because server-sig-algs lists rsa-sha2-256", async () => {
    const p = await pair()
    expect((await p.server.authenticated).publicKeyAlgorithm).toBe("rsa-sha2-256-cert-v01@openssh.com")
    await closePair(p)
  })

  it("works with ed25519 host and user certificates", async () => {
    const ed = makeTestPki({ keyType: "ssh-ed25519" })
    const s = await startTestServer<Decision>({
      hostKey: { certificate: ed.hostCertificate, privateKey: ed.hostKey },
      authenticate: policy(ed)
    })
    const conn = s.nextConnection()
    const c = connectTestClient(s.port, {
      username: "gateway-1",
      certificate: ed.userCertificate,
      privateKey: ed.userKey,
      hostKeyCheck: hostCheck(ed)
    })
    await c.authenticated
    const server = await conn
    expect(server.info.hostKeyAlgorithm).toBe("ssh-ed25519-cert-v01@openssh.com")
    expect((await server.authenticated).publicKeyAlgorithm).toBe("ssh-ed25519-cert-v01@openssh.com")
    c.close()
    await server.closed
    await s.close()
  })

  it("moves 64 MiB each way through one channel at once, intact", async () => {
    const p = await pair()
    const sch = await p.server.openDirectTcpip()
    const cch = await p.nextAccepted()
    const size = 64 * 1024 * 1024
    const t0 = performance.now()
    const [toClient, toServer, sentS, sentC] = await Promise.all([
      collect(cch),
      collect(sch),
      produce(sch, size, 1),
      produce(cch, size, 2)
    ])
    const secs = (performance.now() - t0) / 1000
    expect(toClient).toEqual({ bytes: size, sha: sentS })
    expect(toServer).toEqual({ bytes: size, sha: sentC })
    console.log(`64 MiB each way in ${secs.toFixed(2)} s: ${((2 * size) / 1048576 / secs).toFixed(0)} MiB/s total (${p.server.info.cipherCS})`)
    await closePair(p)
  })

  for (const who of ["server", "client", "both"] as const) {
    it(`rekeys mid-transfer when the ${who} asks (data in both directions)`, async () => {
      const p = await pair({ algorithms: { cipher: ["aes128-ctr"], mac: ["hmac-sha2-256"] } })
      const sch = await p.server.openDirectTcpip()
      const cch = await p.nextAccepted()
      const size = 24 * 1024 * 1024
      const rekey = (i: number) => {
        if (i % 4 !== 1) return
        if (who !== "client") p.server.rekey()
        if (who !== "server") p.client.rekey()
      }
      const [toClient, toServer, sentS, sentC] = await Promise.all([
        collect(cch),
        collect(sch),
        produce(sch, size, 3, rekey),
        produce(cch, size, 4, rekey)
      ])
      expect(toClient).toEqual({ bytes: size, sha: sentS })
      expect(toServer).toEqual({ bytes: size, sha: sentC })
      // A rekey may still be in flight when the data is done: a round trip each way settles it
      // (non-kex messages wait for the exchange to finish on both sides).
      await p.server.ping(5000)
      await p.client.ping(5000)
      expect(p.server.info.kexCount).toBeGreaterThanOrEqual(4)
      expect(p.client.info.kexCount).toBe(p.server.info.kexCount)
      await closePair(p)
    })
  }

  it("rekeys by itself after rekeyBytes, in both roles, with every kex", async () => {
    for (const kex of KEX_ALGORITHMS) {
      serverOptions = { limits: { rekeyBytes: 4 * 1024 * 1024 } }
      const p = await pair({ algorithms: { kex: [kex] }, limits: { rekeyBytes: 3 * 1024 * 1024 } })
      serverOptions = {}
      const sch = await p.server.openDirectTcpip()
      const cch = await p.nextAccepted()
      const size = 16 * 1024 * 1024
      const [toClient, toServer, sentS, sentC] = await Promise.all([
        collect(cch),
        collect(sch),
        produce(sch, size, 5),
        produce(cch, size, 6)
      ])
      expect(toClient).toEqual({ bytes: size, sha: sentS })
      expect(toServer).toEqual({ bytes: size, sha: sentC })
      expect(p.server.info.kexCount).toBeGreaterThan(5)
      await closePair(p)
    }
  })

  it("runs 100 concurrent channels", async () => {
    const p = await pair()
    const n = 100
    const opened = await Promise.all(Array.from({ length: n }, () => p.server.openDirectTcpip()))
    expect(p.server.channelCount).toBe(n)
    while (p.accepted.length < n) await new Promise((r) => setImmediate(r))
    for (const ch of p.accepted) ch.pipe(ch)
    const results = await Promise.all(
      opened.map(async (ch, i) => {
        const data = randomBytes(100_000 + i * 1000)
        const got = collect(ch)
        ch.end(data)
        const r = await got
        return r.sha === createHash("sha256").update(data).digest("hex") && r.bytes === data.length
      })
    )
    expect(results.every(Boolean)).toBe(true)
    for (const ch of opened) ch.destroy()
    // every channel is released once both CLOSEs are through
    for (let i = 0; i < 400 && p.server.channelCount + p.client.channelCount > 0; i++) {
      await new Promise((r) => setTimeout(r, 5))
    }
    expect(p.server.channelCount).toBe(0)
    expect(p.client.channelCount).toBe(0)
    await closePair(p)
  })

  it("a slow consumer stops the sender at one window (no unbounded buffering), then catches up", async () => {
    const window = 1024 * 1024
    serverOptions = { limits: { windowSize: window } }
    const p = await pair({ limits: { windowSize: window } })
    serverOptions = {}
    const sch = await p.server.openDirectTcpip()
    const cch = await p.nextAccepted()
    cch.pause()
    const total = 16 * 1024 * 1024
    const sent = produce(sch, total, 7)
    // wait until the server has used up the whole window
    for (let i = 0; i < 1000 && sch.peerWindow > 0; i++) await new Promise((r) => setTimeout(r, 2))
    await new Promise((r) => setTimeout(r, 50))
    expect(sch.peerWindow).toBe(0)
    expect(cch.readableLength).toBeLessThanOrEqual(window)
    expect(cch.localWindow).toBe(0)
    // now consume through a slow pipe (backpressure from the destination) and check integrity
    const h = createHash("sha256")
    let bytes = 0
    const sink = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _e, cb) {
        h.update(chunk)
        bytes += chunk.length
        if (cch.readableLength > window) cb(new Error("buffered beyond the window"))
        else setImmediate(cb)
      }
    })
    const finished = new Promise<void>((resolve, reject) => {
      sink.on("finish", resolve)
      sink.on("error", reject)
    })
    cch.pipe(sink)
    const sha = await sent
    await finished
    expect(bytes).toBe(total)
    expect(h.digest("hex")).toBe(sha)
    await closePair(p)
  })

  it("EOF and CLOSE propagate both ways", async () => {
    const p = await pair()
    const sch = await p.server.openDirectTcpip()
    const cch = await p.nextAccepted()
    const serverClosed = new Promise((r) => sch.on("close", r))
    const clientClosed = new Promise((r) => cch.on("close", r))
    const clientGot = collect(cch)
    sch.end("from server")
    expect((await clientGot).bytes).toBe(11)
    // half-closed: the client can still send
    const serverGot = collect(sch)
    cch.end("from client")
    expect((await serverGot).bytes).toBe(11)
    // both halves done on both sides: the channels close (autoDestroy sends CLOSE)
    await serverClosed
    await clientClosed
    expect(p.server.channelCount).toBe(0)
    // destroy() on an open channel closes the other end
    const sch2 = await p.server.openDirectTcpip()
    const cch2 = await p.nextAccepted()
    cch2.resume()
    const closed2 = new Promise((r) => cch2.on("close", r))
    sch2.destroy()
    await closed2
    await closePair(p)
  })

  it("answers global requests with REQUEST_FAILURE and replies to pings", async () => {
    const p = await pair()
    for (const name of ["keepalive@openssh.com", "tcpip-forward", "no-such-request@example.com"]) {
      const t0 = performance.now()
      expect(await p.client.globalRequest(name)).toBe(false)
      expect(performance.now() - t0).toBeLessThan(1000)
    }
    await p.server.ping(2000)
    await p.client.ping(2000)
    await closePair(p)
  })

  it("rejects channels the client opens: code 1 for session/x11/auth-agent/forwarded-tcpip, 3 otherwise", async () => {
    const p = await pair()
    const cases: Array<[string, number]> = [
      ["session", OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED],
      ["x11", OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED],
      ["auth-agent", OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED],
      ["forwarded-tcpip", OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED],
      ["direct-tcpip", OPEN_FAILURE.UNKNOWN_CHANNEL_TYPE],
      ["auth-agent@openssh.com", OPEN_FAILURE.UNKNOWN_CHANNEL_TYPE],
      ["something-else", OPEN_FAILURE.UNKNOWN_CHANNEL_TYPE]
    ]
    for (const [type, code] of cases) {
      const err = await p.client.openChannel(type).then(
        () => undefined,
        (e: unknown) => e
      )
      expect(err).toBeInstanceOf(ChannelOpenError)
      expect((err as ChannelOpenError).code).toBe(code)
    }
    expect(p.client.channelCount).toBe(0)
    await closePair(p)
  })

  it("caps the number of channels per connection", async () => {
    serverOptions = { limits: { maxChannels: 3 } }
    const p = await pair()
    serverOptions = {}
    await Promise.all([p.server.openDirectTcpip(), p.server.openDirectTcpip(), p.server.openDirectTcpip()])
    const err = await p.server.openDirectTcpip().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ChannelOpenError)
    expect((err as ChannelOpenError).code).toBe(OPEN_FAILURE.RESOURCE_SHORTAGE)
    await closePair(p)
  })

  it("closes the connection when keepalives go unanswered", async () => {
    serverOptions = { keepalive: { intervalMs: 30, timeoutMs: 150 } }
    const socket = connect(srv.port, "127.0.0.1")
    const serverConn = srv.nextConnection()
    const client = connectSsh(socket, {
      username: "gateway-1",
      certificate: pki.userCertificate,
      privateKey: pki.userKey,
      hostKeyCheck: hostCheck(pki)
    })
    const server = await serverConn
    serverOptions = {}
    await client.authenticated
    await server.authenticated
    await server.ping(2000) // answered while the client reads
    socket.pause() // a half-dead gateway: stops reading
    const info = await server.closed
    expect(info.by).toBe("local")
    expect(info.code).toBe(DISCONNECT.CONNECTION_LOST)
    socket.destroy()
  })

  describe("authentication", () => {
    const tryAuth = async (options: Partial<ClientOptions>) => {
      const serverConn = srv.nextConnection()
      const before = attempts.length
      const client = connectTestClient(srv.port, {
        username: "gateway-1",
        certificate: pki.userCertificate,
        privateKey: pki.userKey,
        hostKeyCheck: hostCheck(pki),
        ...options
      })
      const server = await serverConn
      const [c, s] = await Promise.allSettled([client.authenticated, server.authenticated])
      await client.closed
      return { client: c.status, server: s.status, attempts: attempts.slice(before), closed: await server.closed }
    }

    it("refuses a raw (non-certificate) key", async () => {
      const r = await tryAuth({ certificate: pki.userKey.publicBlob })
      expect(r.client).toBe("rejected")
      expect(r.server).toBe("rejected")
      expect(r.attempts.at(-1)?.reason).toBe("certificates required, raw public keys not allowed")
    })

    it("refuses a certificate from another CA, a host certificate, a wrong principal", async () => {
      const otherCa = generateSshKey("ssh-rsa")
      const certs = [
        issueCertificate(otherCa, pki.userKey, { principals: ["gateway-1"] }),
        issueCertificate(pki.userCa, pki.userKey, { certType: CERT_TYPE_HOST, principals: ["gateway-1"] }),
        issueCertificate(pki.userCa, pki.userKey, { principals: ["someone-else"] })
      ]
      for (const certificate of certs) {
        const r = await tryAuth({ certificate })
        expect(r.client).toBe("rejected")
        expect(r.server).toBe("rejected")
      }
    })

    it("refuses a certificate for a different key than the signature (bad signature)", async () => {
      const r = await tryAuth({ privateKey: generateSshKey("ssh-rsa") })
      expect(r.server).toBe("rejected")
      expect(r.attempts.at(-1)?.reason).toBe("bad signature")
    })

    it("drops a connection that does not authenticate in time", async () => {
      serverOptions = { limits: { authTimeoutMs: 100 } }
      const serverConn = srv.nextConnection()
      const socket = connect(srv.port, "127.0.0.1")
      socket.on("error", () => {})
      socket.write("SSH-2.0-Slowpoke\r\n")
      const server = await serverConn
      serverOptions = {}
      const info = await server.closed
      expect(info.reason).toBe("authentication timeout")
      await expect(server.authenticated).rejects.toThrow()
      socket.destroy()
    })

    it("the client refuses a host certificate its check rejects", async () => {
      const serverConn = srv.nextConnection()
      const client = connectTestClient(srv.port, {
        username: "gateway-1",
        certificate: pki.userCertificate,
        privateKey: pki.userKey,
        hostKeyCheck: () => "not our relay"
      })
      await expect(client.authenticated).rejects.toThrow()
      const info = await client.closed
      expect(info.code).toBe(DISCONNECT.HOST_KEY_NOT_VERIFIABLE)
      expect(info.reason).toBe("not our relay")
      const server = await serverConn
      expect((await server.closed).by).not.toBe("local")
    })
  })
})

describe("client-role identification exchange", () => {
  const start = (chunks: Array<string>) => {
    const socket = new Duplex({
      read() {},
      write(_c, _e, cb) {
        cb()
      }
    })
    const t = new Transport(socket, { role: "client", verifyHostKey: () => {} })
    let closed: string | undefined
    t.start({
      onPacket: () => {},
      onKexComplete: () => {},
      onWritable: () => {},
      onClose: (i) => (closed = i.reason)
    })
    for (const c of chunks) socket.push(Buffer.from(c, "latin1"))
    return { t, closed: () => closed }
  }
  const tick = () => new Promise((r) => setImmediate(r))

  it("tolerates lines before the server's identification", async () => {
    const r = start(["Welcome to a banner\r\n", "second line\nthird", " line\r\nSSH-2.0-Server_1.0 comment\r\n"])
    await tick()
    expect(r.t.remoteVersion).toBe("SSH-2.0-Server_1.0 comment")
    expect(r.closed()).toBeUndefined()
  })

  it("caps the number and length of pre-banner lines and the identification line", async () => {
    const many = start([Array.from({ length: 60 }, (_, i) => `line ${i}\r\n`).join("")])
    const long = start(["x".repeat(2000)])
    const longVersion = start(["SSH-2.0-" + "y".repeat(300) + "\r\n"])
    const ssh1 = start(["SSH-1.5-Ancient\r\n"])
    await tick()
    expect(many.closed()).toBe("too much data before the identification line")
    expect(long.closed()).toBe("identification line too long")
    expect(longVersion.closed()).toBe("identification line too long")
    expect(ssh1.closed()).toMatch(/unsupported protocol version/)
  })
})
