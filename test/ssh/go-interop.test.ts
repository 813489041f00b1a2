/**
 * Interop with Go's golang.org/x/crypto/ssh (Debian's 0.4.0) in the gateway role: our SSH server
 * (acceptSshConnection on a net.Server, OpenSSH host certificate with principal 127.0.0.1:2222,
 * user certificates checked by the relay's policy certPolicy.ts) against the Go gateway peer
 * (test/go/gateway) configured like Infisical's gateway: pinned algorithms, user = gateway id,
 * certificate signer, host-key callback requiring a host certificate whose principal is
 * "<host>:<port>" (-host-principal, since the test port is random), plus -ca pinning our server CA.
 *
 * Among the gateway's pinned algorithms x/crypto 0.4.0 and our server share exactly
 * diffie-hellman-group14-sha256 x aes{128,192,256}-ctr x hmac-sha2-256, with the RSA host
 * certificate offered as rsa-sha2-512-cert, rsa-sha2-256-cert or ssh-rsa-cert. The server side is
 * restricted (ServerOptions.algorithms) to pick each combination while the peer keeps its pinned
 * lists; curve25519-sha256, aes128-gcm@openssh.com and hmac-sha2-256-etm@openssh.com are
 * exercised as non-pinned extras by overriding the peer's lists.
 *
 * No sleeping: every wait is on an observable event (a stdout line of the peer, a promise of our
 * connection, a stream event); timeouts are failure guards only.
 */
import { once } from "node:events"
import { createCipheriv, createHash, randomBytes, randomUUID, type Cipher } from "node:crypto"
import * as fs from "node:fs/promises"
import { createServer, type AddressInfo, type Server, type Socket } from "node:net"
import { performance } from "node:perf_hooks"
import type { Writable } from "node:stream"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { startDelayProxy } from "../../bench/delayProxy.ts"
import type { AlgorithmPreferences } from "../../src/ssh/algorithms.ts"
import { checkGatewayCertificate, type CertificateVerdict } from "../../src/ssh/certPolicy.ts"
import type { KeepaliveOptions } from "../../src/ssh/connection.ts"
import { parseAuthorizedKeyLine, parseOpenSshPrivateKey, type SshPrivateKey } from "../../src/ssh/keys.ts"
import {
  acceptSshConnection,
  type AuthAttempt,
  type Authenticated,
  type ServerLimits,
  type SshChannel,
  type SshServerConnection
} from "../../src/ssh/server.ts"
import {
  buildGoPeer,
  type GatewayMode,
  type GoGatewayOptions,
  makeTempDir,
  mintSshKeyPair,
  mintSshMaterial,
  PeerSet,
  type PeerProcess,
  readAll,
  signSshCert,
  type SshMaterial,
  sourceStreamBytes,
  spawnGoGateway
} from "../support/goPeers.ts"

const RELAY_NAME = "test-relay"
const GATEWAY_ID = randomUUID()
const GATEWAY_NAME = "test-gateway"
const MiB = 1024 * 1024
const GiB = 1024 * MiB

const DH14 = "diffie-hellman-group14-sha256"
const HMAC256 = "hmac-sha2-256"
const SHARED_PINNED_CIPHERS = ["aes128-ctr", "aes192-ctr", "aes256-ctr"] as const
const HOST_CERT_ALGORITHMS = [
  "rsa-sha2-512-cert-v01@openssh.com",
  "rsa-sha2-256-cert-v01@openssh.com",
  "ssh-rsa-cert-v01@openssh.com"
] as const

type Conn = SshServerConnection<CertificateVerdict>

// ---------------------------------------------------------------------------------------------
// small helpers

/** Failure guard: rejects if `p` has not settled within `ms`. */
const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([p, guard]).finally(() => clearTimeout(timer))
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex")

/** The `source:N` stream (AES-128-CTR keystream, zero key and IV), generated chunk by chunk. */
class SourceStream {
  private readonly cipher: Cipher = createCipheriv("aes-128-ctr", Buffer.alloc(16), Buffer.alloc(16))
  private readonly zeros: Buffer
  constructor(chunkSize: number) {
    this.zeros = Buffer.alloc(chunkSize)
  }
  next(n: number): Buffer {
    return this.cipher.update(this.zeros.subarray(0, n))
  }
}

const expectedDigests = new Map<number, string>()
/** sha256 of the first `n` bytes of the `source:N` stream, computed incrementally (memoized). */
const sourceStreamDigest = (n: number): string => {
  let d = expectedDigests.get(n)
  if (d === undefined) {
    const src = new SourceStream(MiB)
    const h = createHash("sha256")
    for (let left = n; left > 0; left -= MiB) h.update(src.next(Math.min(MiB, left)))
    d = h.digest("hex")
    expectedDigests.set(n, d)
  }
  return d
}

/** Writes `total` bytes produced by `chunk(i, size)` with write() backpressure, then ends. */
const writeAll = async (
  w: Writable,
  total: number,
  chunkSize: number,
  chunk: (i: number, size: number) => Buffer,
  onChunk?: (i: number) => void
): Promise<void> => {
  for (let i = 0, off = 0; off < total; i++, off += chunkSize) {
    const b = chunk(i, Math.min(chunkSize, total - off))
    onChunk?.(i)
    if (!w.write(b)) await once(w, "drain")
  }
  w.end()
}

/** Hashes everything readable from `r` until its end. */
const hashAll = (r: NodeJS.ReadableStream): Promise<{ bytes: number; digest: string }> =>
  new Promise((resolve, reject) => {
    const h = createHash("sha256")
    let bytes = 0
    r.on("data", (c: Buffer) => {
      bytes += c.length
      h.update(c)
    })
    r.once("end", () => resolve({ bytes, digest: h.digest("hex") }))
    r.once("error", reject)
  })

/**
 * Sends `total` random-ish bytes through an echoing channel and checks they come back intact.
 * `onChunk` runs after each chunk is produced (used to start rekeys mid-transfer).
 */
const echoThrough = async (
  ch: SshChannel,
  total: number,
  chunkSize: number,
  onChunk?: (i: number) => void
): Promise<void> => {
  const base = randomBytes(chunkSize)
  const sent = createHash("sha256")
  const received = hashAll(ch)
  await writeAll(
    ch,
    total,
    chunkSize,
    (i, size) => {
      const b = Buffer.from(base.subarray(0, size))
      b.writeUInt32BE(i, 0)
      sent.update(b)
      return b
    },
    onChunk
  )
  const got = await received
  expect(got.bytes).toBe(total)
  expect(got.digest).toBe(sent.digest("hex"))
}

// ---------------------------------------------------------------------------------------------
// our server and the Go peer

interface Accepted {
  readonly conn: Conn
  readonly attempts: Array<AuthAttempt>
}

interface Relay {
  readonly addr: string
  /** The next connection accepted by this server. */
  next(): Promise<Accepted>
  close(): Promise<void>
}

interface RelayOptions {
  readonly hostCert?: string
  readonly algorithms?: AlgorithmPreferences
  readonly keepalive?: KeepaliveOptions
  readonly limits?: ServerLimits
}

let dir: string
let ssh: SshMaterial
let hostPrivateKey: SshPrivateKey
let clientCaBlob: Buffer
const peers = new PeerSet()
const relays = new Set<Relay>()

/** acceptSshConnection on a net.Server on 127.0.0.1:0, with the relay's certificate policy. */
const startRelay = async (o: RelayOptions = {}): Promise<Relay> => {
  const hostCert = await fs.readFile(o.hostCert ?? ssh.hostCert, "utf8")
  const accepted: Array<Accepted> = []
  const waiters: Array<(a: Accepted) => void> = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    const attempts: Array<AuthAttempt> = []
    const conn = acceptSshConnection<CertificateVerdict>(socket, {
      hostKey: { certificate: hostCert, privateKey: hostPrivateKey },
      authenticate: ({ username, certificate }) =>
        checkGatewayCertificate({
          username,
          certificate,
          relayName: RELAY_NAME,
          clientCaPublicKey: clientCaBlob,
          now: new Date()
        }),
      onAuthAttempt: (a) => attempts.push(a),
      ...(o.algorithms !== undefined ? { algorithms: o.algorithms } : {}),
      ...(o.keepalive !== undefined ? { keepalive: o.keepalive } : {}),
      ...(o.limits !== undefined ? { limits: o.limits } : {})
    })
    const a = { conn, attempts }
    const w = waiters.shift()
    if (w !== undefined) w(a)
    else accepted.push(a)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const relay: Relay = {
    addr: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    next: () => {
      const a = accepted.shift()
      if (a !== undefined) return Promise.resolve(a)
      return within(new Promise<Accepted>((resolve) => waiters.push(resolve)), 20_000, "accepting a connection")
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
  relays.add(relay)
  return relay
}

/** The Go peer configured like Infisical's gateway (pinned algorithms unless overridden). */
const spawnGateway = (relay: Relay, mode: GatewayMode, extra: Partial<GoGatewayOptions> = {}): Promise<PeerProcess> =>
  spawnGoGateway(peers, {
    addr: relay.addr,
    user: GATEWAY_ID,
    cert: ssh.gatewayCert,
    key: ssh.gatewayKey.privateKeyPath,
    hostPrincipal: ssh.hostPrincipal,
    ca: ssh.serverCa.publicKeyPath,
    mode,
    ...extra
  })

interface Connected {
  readonly proc: PeerProcess
  readonly conn: Conn
  readonly auth: Authenticated<Extract<CertificateVerdict, { ok: true }>>
  readonly attempts: Array<AuthAttempt>
}

/** Starts a peer and waits until both ends consider the connection established. */
const connectGateway = async (
  relay: Relay,
  mode: GatewayMode,
  extra: Partial<GoGatewayOptions> = {}
): Promise<Connected> => {
  const proc = await spawnGateway(relay, mode, extra)
  const exitedEarly = proc.exited.then((e) => {
    throw new Error(`gateway exited (code ${e.code}) before login: ${proc.stderr()}`)
  })
  exitedEarly.catch(() => {})
  const { conn, attempts } = await Promise.race([relay.next(), exitedEarly])
  const auth = await within(Promise.race([conn.authenticated, exitedEarly]), 20_000, "authentication")
  await proc.waitForLine(/^READY /, { timeoutMs: 20_000 })
  return { proc, conn, auth, attempts }
}

/** A peer that must fail its handshake: exit code 2 and x/crypto's "ssh: handshake failed". */
const expectHandshakeFailure = async (proc: PeerProcess): Promise<string> => {
  const exit = await within(proc.exited, 20_000, "gateway exit")
  const stderr = proc.stderr()
  expect(exit.code, stderr).toBe(2)
  expect(stderr).toMatch(/^ssh: handshake failed: /m)
  expect(proc.lines.some((l) => l.startsWith("READY"))).toBe(false)
  return stderr
}

beforeAll(async () => {
  dir = await makeTempDir("go-interop-")
  const [, material] = await Promise.all([
    buildGoPeer("gateway"),
    mintSshMaterial({ dir, relayName: RELAY_NAME, gatewayId: GATEWAY_ID, gatewayName: GATEWAY_NAME })
  ])
  ssh = material
  hostPrivateKey = parseOpenSshPrivateKey(await fs.readFile(ssh.hostKey.privateKeyPath, "utf8"))
  clientCaBlob = parseAuthorizedKeyLine(ssh.clientCa.publicKeyLine).blob
  expect(ssh.hostPrincipal).toBe("127.0.0.1:2222")
})

afterEach(async () => {
  await peers.killAll()
  const all = [...relays]
  relays.clear()
  await Promise.all(all.map((r) => r.close()))
})

afterAll(async () => {
  await peers.killAll()
  if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------------------------

describe("Go gateway (x/crypto 0.4.0) -> our SSH server", () => {
  describe("handshake and user-certificate login", () => {
    const pinnedCombos = SHARED_PINNED_CIPHERS.flatMap((cipher) =>
      HOST_CERT_ALGORITHMS.map((hostKey) => ({ hostKey, cipher }))
    )

    it.each(pinnedCombos)("pinned: $cipher, $hostKey (dh-group14-sha256, hmac-sha2-256)", async ({ hostKey, cipher }) => {
      const relay = await startRelay({ algorithms: { hostKey: [hostKey], cipher: [cipher] } })
      const { proc, conn, auth } = await connectGateway(relay, "echo")

      // the peer kept the gateway's pinned lists, filtered to what x/crypto 0.4.0 implements
      const algos = await proc.waitForLine(/^ALGOS .*$/)
      expect(algos[0]).toBe(
        `ALGOS kex=${DH14} ciphers=aes128-ctr,aes192-ctr,aes256-ctr macs=${HMAC256} hostkeys=${HOST_CERT_ALGORITHMS.join(",")}`
      )
      expect(conn.info).toMatchObject({
        kex: DH14,
        hostKeyAlgorithm: hostKey,
        cipherCS: cipher,
        cipherSC: cipher,
        macCS: HMAC256,
        macSC: HMAC256,
        kexCount: 1
      })
      expect(conn.info.remoteVersion).toMatch(/^SSH-2\.0-Go/)
      await proc.waitForLine(/^READY user=\S+ server=SSH-2\.0-InfisicalRelay_1\.0$/)
      expect(auth.username).toBe(GATEWAY_ID)
      expect(auth.publicKeyAlgorithm).toMatch(/^rsa-sha2-(256|512)-cert-v01@openssh\.com$/)
      expect(auth.decision).toEqual({ ok: true, identity: { gatewayId: GATEWAY_ID, gatewayName: GATEWAY_NAME } })
      expect(auth.certificate.keyId).toBe(`client-${RELAY_NAME}`)

      // both directions work under the negotiated keys
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      await echoThrough(ch, 256 * 1024, 32 * 1024)
      await proc.waitForLine(/^CHANNEL 1 type=direct-tcpip extra=0$/)
    })

    const extras = [
      // aes128-gcm: the MAC is implicit, whatever the MAC lists say
      { kex: "curve25519-sha256", cipher: "aes128-gcm@openssh.com", mac: "hmac-sha2-256-etm@openssh.com", expectMac: "<implicit>" },
      // the -etm MAC on the wire, with a CTR cipher
      { kex: "curve25519-sha256", cipher: "aes256-ctr", mac: "hmac-sha2-256-etm@openssh.com", expectMac: "hmac-sha2-256-etm@openssh.com" }
    ]

    it.each(extras)("non-pinned extras: $kex, $cipher, $mac", async ({ kex, cipher, mac, expectMac }) => {
      const relay = await startRelay()
      const { proc, conn, auth } = await connectGateway(relay, "echo", { kex, ciphers: cipher, macs: mac })
      await proc.waitForLine(new RegExp(`^ALGOS kex=${kex} ciphers=${cipher} macs=${mac} `))
      expect(conn.info).toMatchObject({
        kex,
        hostKeyAlgorithm: HOST_CERT_ALGORITHMS[0],
        cipherCS: cipher,
        cipherSC: cipher,
        macCS: expectMac,
        macSC: expectMac
      })
      expect(auth.username).toBe(GATEWAY_ID)
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      await echoThrough(ch, 256 * 1024, 32 * 1024)
    })

    it("with our default lists, the pinned gateway negotiates dh-group14 / rsa-sha2-512-cert / aes128-ctr / hmac-sha2-256", async () => {
      const relay = await startRelay()
      const { conn } = await connectGateway(relay, "echo")
      expect(conn.info).toMatchObject({
        kex: DH14,
        hostKeyAlgorithm: "rsa-sha2-512-cert-v01@openssh.com",
        cipherCS: "aes128-ctr",
        cipherSC: "aes128-ctr",
        macCS: HMAC256,
        macSC: HMAC256
      })
    })
  })

  it("keepalives: the gateway's keepalive@openssh.com is answered (failure), and ours gets a reply from Go", async () => {
    const relay = await startRelay()
    const { proc, conn } = await connectGateway(relay, "echo", { keepaliveInterval: "100ms", keepaliveTimeout: "5s" })
    const first = await proc.waitForLine(/^KEEPALIVE reply=(true|false) rtt_ms=([\d.]+)$/, { timeoutMs: 10_000 })
    expect(first[1]).toBe("false") // the relay answers REQUEST_FAILURE, which the gateway counts as alive
    const firstIndex = proc.lines.indexOf(first[0])
    await proc.waitForLine(/^KEEPALIVE reply=false rtt_ms=[\d.]+$/, { fromLine: firstIndex + 1, timeoutMs: 10_000 })
    for (let i = 0; i < 3; i++) await conn.ping(5_000)
    expect(conn.isClosed).toBe(false)
  })

  it("server-opened direct-tcpip channels carry empty extra data and are accepted", async () => {
    const relay = await startRelay()
    const { proc, conn } = await connectGateway(relay, "echo")
    for (const n of [1, 2]) {
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      expect(ch.type).toBe("direct-tcpip")
      await proc.waitForLine(new RegExp(`^CHANNEL ${n} type=direct-tcpip extra=0$`))
      ch.end(`hello ${n}`)
      expect((await readAll(ch)).toString()).toBe(`hello ${n}`)
      await proc.waitForLine(new RegExp(`^CHANNEL_DONE ${n} in=7 out=7$`))
    }
  })

  describe("1 GiB each way through one channel", () => {
    it("the incremental source stream matches sourceStreamBytes", () => {
      const n = 100_003
      const src = new SourceStream(MiB)
      const parts = [src.next(1), src.next(4095), src.next(33_333), src.next(n - 1 - 4095 - 33_333)]
      expect(Buffer.concat(parts).equals(sourceStreamBytes(n))).toBe(true)
      expect(sourceStreamDigest(n)).toBe(sha256(sourceStreamBytes(n)))
    })

    it("server -> Go (sink): count and sha256 match", async () => {
      const relay = await startRelay()
      const { proc, conn } = await connectGateway(relay, "sink")
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      const reply = readAll(ch)
      const src = new SourceStream(MiB)
      const t0 = performance.now()
      await writeAll(ch, GiB, MiB, (_i, size) => src.next(size))
      const line = (await reply).toString()
      const seconds = (performance.now() - t0) / 1000
      console.log(
        `server -> Go: 1024 MiB in ${seconds.toFixed(2)} s = ${(1024 / seconds).toFixed(1)} MiB/s ` +
          `(${conn.info.cipherSC}, ${conn.info.macSC}, kexCount ${conn.info.kexCount})`
      )
      expect(line).toBe(`${GiB} ${sourceStreamDigest(GiB)}\n`)
      await proc.waitForLine(new RegExp(`^CHANNEL_DONE 1 in=${GiB} out=\\d+$`))
    }, 90_000)

    it("Go (source:1073741824) -> server: count and sha256 match", async () => {
      const relay = await startRelay()
      const { proc, conn } = await connectGateway(relay, `source:${GiB}`)
      const t0 = performance.now()
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      ch.end() // the source drains our side until EOF
      const got = await hashAll(ch)
      const seconds = (performance.now() - t0) / 1000
      console.log(
        `Go -> server: 1024 MiB in ${seconds.toFixed(2)} s = ${(1024 / seconds).toFixed(1)} MiB/s ` +
          `(${conn.info.cipherCS}, ${conn.info.macCS}, kexCount ${conn.info.kexCount})`
      )
      expect(got.bytes).toBe(GiB)
      expect(got.digest).toBe(sourceStreamDigest(GiB))
      await proc.waitForLine(new RegExp(`^CHANNEL_DONE 1 in=0 out=${GiB}$`))
    }, 90_000)
  })

  describe("channel window over a long round trip (bandwidth x delay)", () => {
    const WINDOW = 8 * MiB
    const limits = { windowSize: WINDOW, maxWindowSize: 2 * WINDOW }
    /** 64 MiB from the Go source through one channel; the window the channel ended with. */
    const download = async (conn: Conn, proc: PeerProcess) => {
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      ch.end()
      const got = await hashAll(ch)
      expect(got.bytes).toBe(64 * MiB)
      expect(got.digest).toBe(sourceStreamDigest(64 * MiB))
      await proc.waitForLine(/^CHANNEL_DONE 1 /)
      return ch.currentWindow
    }

    it("through 25 ms each way (a gateway far away) the window grows to its maximum", async () => {
      const relay = await startRelay({ limits })
      const [host, port] = relay.addr.split(":")
      const proxy = await startDelayProxy({ target: { host: host!, port: Number(port) }, delayMs: 25 })
      try {
        const far = { ...relay, addr: `127.0.0.1:${(proxy.address() as AddressInfo).port}` }
        const { proc, conn } = await connectGateway(far, `source:${64 * MiB}`)
        expect(await download(conn, proc)).toBe(2 * WINDOW)
        expect(conn.roundTripMs()).toBeGreaterThanOrEqual(50)
      } finally {
        proxy.close()
      }
    }, 60_000)

    it("on loopback (a window takes many round trips) the window keeps its size", async () => {
      const relay = await startRelay({ limits })
      const { proc, conn } = await connectGateway(relay, `source:${64 * MiB}`)
      for (let i = 0; i < 5; i++) await conn.ping() // round-trip samples: the estimate is the shortest
      expect(await download(conn, proc)).toBe(WINDOW)
    }, 60_000)
  })

  it("100 concurrent channels on one connection each echo their own data", async () => {
    const relay = await startRelay()
    const { conn } = await connectGateway(relay, "echo")
    const N = 100
    const payloads = Array.from({ length: N }, (_, i) => {
      const b = randomBytes(16 * 1024 + i * 311)
      b.writeUInt32BE(i, 0)
      return b
    })
    const channels = await Promise.all(payloads.map(() => conn.openDirectTcpip({ timeoutMs: 20_000 })))
    expect(new Set(channels.map((c) => c.localId)).size).toBe(N)
    const closed = channels.map((ch) => once(ch, "close"))
    const echoed = await Promise.all(
      channels.map((ch, i) => {
        const back = readAll(ch)
        ch.end(payloads[i])
        return back
      })
    )
    echoed.forEach((b, i) => expect(b.equals(payloads[i]!), `channel ${i}`).toBe(true))
    await within(Promise.all(closed), 20_000, "channels closing")
    expect(conn.channelCount).toBe(0)
  })

  describe("rekeying in the middle of a transfer", () => {
    it("initiated by our server (conn.rekey() while data flows both ways)", async () => {
      const relay = await startRelay()
      const { conn } = await connectGateway(relay, "echo")
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      let started = 0
      await echoThrough(ch, 48 * MiB, MiB, (i) => {
        if (i % 6 === 3 && conn.rekey()) started++
      })
      expect(started).toBeGreaterThanOrEqual(4)
      expect(conn.info.kexCount).toBe(1 + started)
      // the connection is still healthy after the rekeys
      await conn.ping(5_000)
      await echoThrough(await conn.openDirectTcpip({ timeoutMs: 10_000 }), 64 * 1024, 16 * 1024)
    }, 60_000)

    it("initiated by the Go peer (-rekey-threshold)", async () => {
      const relay = await startRelay()
      const { conn } = await connectGateway(relay, "echo", { rekeyThreshold: 2 * MiB })
      const ch = await conn.openDirectTcpip({ timeoutMs: 10_000 })
      await echoThrough(ch, 24 * MiB, MiB)
      // our server's threshold is 1 GiB and we never called rekey(): every extra kex came from Go
      expect(conn.info.kexCount).toBeGreaterThan(1)
      console.log(`Go-initiated rekeys during 24 MiB echoed: ${conn.info.kexCount - 1}`)
      await conn.ping(5_000)
    }, 60_000)
  })

  describe("our server rejects the gateway's certificate", () => {
    const rejected = async (cert: string, reason: string) => {
      const relay = await startRelay()
      const proc = await spawnGateway(relay, "echo", { cert })
      const { conn, attempts } = await relay.next()
      await expect(conn.authenticated).rejects.toThrow(/closed before authentication/)
      const stderr = await expectHandshakeFailure(proc)
      expect(stderr).toMatch(/unable to authenticate/)
      const failures = attempts.filter((a) => a.method === "publickey")
      expect(failures.length).toBeGreaterThan(0)
      for (const a of failures) expect(a).toMatchObject({ username: GATEWAY_ID, outcome: "failure", reason })
      await within(conn.closed, 10_000, "server side closed")
    }

    it("signed by another CA", async () => {
      const otherCa = await mintSshKeyPair(dir, "other-client-ca")
      const cert = await signSshCert(dir, otherCa, ssh.gatewayKey.publicKeyPath, {
        keyId: `client-${RELAY_NAME}`,
        principals: [GATEWAY_ID, GATEWAY_NAME],
        name: "gateway-other-ca"
      })
      await rejected(cert, "certificate check failed: ssh: certificate signed by unrecognized authority")
    })

    it("wrong key id", async () => {
      const cert = await ssh.userCert(GATEWAY_ID, GATEWAY_NAME, "client-some-other-relay")
      await rejected(cert, "certificate Key ID does not match expected value")
    })

    it("expired (ssh-keygen -V 20200101:20200102)", async () => {
      const cert = await signSshCert(dir, ssh.clientCa, ssh.gatewayKey.publicKeyPath, {
        keyId: `client-${RELAY_NAME}`,
        principals: [GATEWAY_ID, GATEWAY_NAME],
        validity: "20200101:20200102",
        name: "gateway-expired"
      })
      await rejected(cert, "certificate check failed: ssh: cert has expired")
    })
  })

  describe("the gateway refuses our server's host certificate", () => {
    const refused = async (hostCert: string, message: RegExp) => {
      const relay = await startRelay({ hostCert })
      const proc = await spawnGateway(relay, "echo")
      const { conn, attempts } = await relay.next()
      await expect(conn.authenticated).rejects.toThrow(/closed before authentication/)
      const stderr = await expectHandshakeFailure(proc)
      expect(stderr).toMatch(message)
      expect(attempts).toEqual([])
      await within(conn.closed, 10_000, "server side closed")
    }

    it("wrong principal (127.0.0.1:2223 instead of 127.0.0.1:2222)", async () => {
      const cert = await signSshCert(dir, ssh.serverCa, ssh.hostKey.publicKeyPath, {
        keyId: "relay-server",
        principals: ["127.0.0.1:2223"],
        host: true,
        name: "relay-host-wrong-principal"
      })
      await refused(cert, /host certificate check failed: ssh: principal "127\.0\.0\.1:2222" not in the set of valid principals/)
    })

    it("signed by a CA other than the pinned server CA (-ca)", async () => {
      const otherCa = await mintSshKeyPair(dir, "other-server-ca")
      const cert = await signSshCert(dir, otherCa, ssh.hostKey.publicKeyPath, {
        keyId: "relay-server",
        principals: [ssh.hostPrincipal],
        host: true,
        name: "relay-host-other-ca"
      })
      await refused(cert, /host certificate check failed: not signed by the expected CA/)
    })
  })
})
