/**
 * Fuzzing a running relay (issue #7 "Hardening"): an `infisical relay start` subprocess with the
 * in-process dev control plane, attacked on both ports at every protocol state with fast-check.
 *
 * SSH port (our SSH client pieces complete the states an attacker must pass first):
 *   identification line → KEXINIT → the KEX init message → message order before NEWKEYS →
 *   encrypted packets before authentication (bad MACs, bad padding, unknown and truncated messages)
 *   → USERAUTH with mutated certificates (bit flips, wrong key types, certificates re-signed by the
 *   client CA with one field changed) → the connection protocol after a login with a real gateway
 *   certificate from the control plane (bogus channel ids and windows, window adjusts past 2^32,
 *   data on unknown channels, garbage global requests, gateway-side opens).
 * TLS port: mutated ClientHellos (a real one captured from a Node client, re-encoded with mutated
 * lengths, cipher lists and extensions, sent raw), client certificates signed by the relay's client
 * CA with mutated subjects and extensions (odd string types, huge or empty values), and certificates
 * from a wrong CA.
 *
 * Every property states what the relay must do (an oracle from the SSH RFCs and protocol.md §4)
 * where the input decides it, and otherwise only that the connection ends. After every batch:
 * the subprocess is still running and logged no crash, a session through the long-lived gateway and
 * a session through a freshly logged-in Go gateway both echo end to end, the relay's connections on
 * its two ports return to the baseline (no leaked socket), and its RSS stays within RSS_TOLERANCE of
 * the baseline taken after warm-up.
 *
 * Runs: the defaults take about a minute. FUZZ_RUNS=<n> multiplies every property's run count
 * (e.g. FUZZ_RUNS=20 for a long run); FUZZ_SEED=<seed> changes the fixed seed; FUZZ_SHRINK=1 lets
 * fast-check shrink a counterexample (slow against a live relay). On failure fast-check prints the
 * seed and path: re-run with FUZZ_SEED=<seed> (and the same FUZZ_RUNS) to reproduce.
 */
import { generateKeyPairSync, getDiffieHellman, KeyObject, randomBytes, randomUUID } from "node:crypto"
import type * as tls from "node:tls"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { relativeValidity } from "../../src/dev/sshIssue.ts"
import type { RelayPki } from "../../src/pki/relayPki.ts"
import { generateRsaKeyPair, splitPemChain } from "../../src/pki/x509.ts"
import { ZERO_UUID } from "../../src/pki/profile.ts"
import { CIPHER_ALGORITHMS, KEX_ALGORITHMS, MAC_ALGORITHMS } from "../../src/ssh/algorithms.ts"
import { CERT_TIME_INFINITY, CERT_TYPE_USER, signCertificate } from "../../src/ssh/certs.ts"
import { MSG } from "../../src/ssh/constants.ts"
import { generateSshKey, parseAuthorizedKeyLine, parseOpenSshPrivateKey, publicKeyOf, type SshPrivateKey } from "../../src/ssh/keys.ts"
import { rawClient, type RawClient } from "../../src/ssh/testkit.ts"
import { SshReader } from "../../src/ssh/wire.ts"
import { readAll } from "../support/goPeers.ts"
import {
  byteMutation,
  captureClientHello,
  collectUntilClosed,
  der,
  encodeClientHelloMessage,
  eventuallyAsync,
  exchange,
  extension,
  frameNone,
  fuzzParameters,
  fuzzTimeout,
  handshakeRecords,
  kexInitPayload,
  leafExtensions,
  metricSum,
  mutate,
  nameAttribute,
  nextOfType,
  OID,
  openFds,
  parseClientHello,
  parsePlainStream,
  plainPacket,
  recordUnimplemented,
  relayConnections,
  rss,
  scrapeMetrics,
  sealForged,
  signRawCertificate,
  sshWriter,
  tlsAttempt,
  tlsRecordsProblem,
  uint32Edge,
  userauthRequest,
  type ByteMutation,
  type ClientHello
} from "../support/fuzzLive.ts"
import { eventually, freePort, type Gateway, type Harness, startHarness } from "../support/relayHarness.ts"

const MiB = 1024 * 1024
/**
 * RSS growth allowed over the post-warm-up baseline, at any batch. Thousands of hostile
 * connections leave garbage V8 collects lazily (+10 to +40 MiB seen); a per-connection leak of
 * even a few KiB over the long FUZZ_RUNS runs, or any buffer held per attempt, exceeds it.
 */
const RSS_TOLERANCE = 96 * MiB
/** What the relay's log must never show: a crash, or a bug caught and logged. */
const CRASH_PATTERN = /uncaught|unhandled|FATAL ERROR|TypeError|RangeError|ReferenceError|SyntaxError|heap out of memory/i

let h: Harness
let pid: number
let statusPort: number
/** A gateway registered through the control plane, connected (Go, echo) for the whole run. */
let steady: Gateway
/** Another registered gateway whose real certificate and key our raw SSH client logs in with. */
let fuzzGateway: { readonly gatewayId: string; readonly blob: Buffer; readonly key: SshPrivateKey }
let sshCas: { readonly client: { readonly key: SshPrivateKey }; readonly server: { readonly key: SshPrivateKey } }
let relayPki: RelayPki
/** Key material for raw client certificates. */
let leafKey: { readonly spki: Buffer; readonly pem: string }
let clientCa: { readonly name: Buffer; readonly key: KeyObject }
let serverChain: Array<string>
let baseline: { readonly connections: number; readonly rss: number }
const rssSamples: Array<number> = []

const relayName = "test-relay"

beforeAll(async () => {
  statusPort = await freePort()
  h = await startHarness({
    subprocess: true,
    relayName,
    // The fuzzer opens hundreds of connections a second from one address: admission control
    // (src/relay/Limits.ts, tested on its own) would refuse most of them before any parser runs.
    relayArgs: [`--status-addr=127.0.0.1:${statusPort}`, "--ssh-accept-rate=0", "--tls-accept-rate=0"]
  })
  pid = h.relayProcess!.child.pid!
  const [gw, cas, pki, keys] = await Promise.all([
    h.connectGateway("fuzz-steady", "echo"),
    h.cp((c) => c.sshCas({ kind: "instance" })),
    h.cp((c) => c.relayPki({ kind: "instance" })),
    generateRsaKeyPair(2048)
  ])
  steady = gw
  sshCas = cas
  relayPki = pki
  const identity = await h.cp((c) => c.createIdentity({ name: "fuzz-gateway-identity" }))
  const reg = await h.cp((c) => c.registerGateway({ identityId: identity.identityId, relayName, name: "fuzz-gateway" }))
  fuzzGateway = {
    gatewayId: reg.gatewayId,
    blob: parseAuthorizedKeyLine(reg.ssh.clientCertificate).blob,
    key: parseOpenSshPrivateKey(reg.ssh.clientPrivateKey)
  }
  leafKey = {
    spki: KeyObject.from(keys.publicKey).export({ type: "spki", format: "der" }),
    pem: KeyObject.from(keys.privateKey).export({ type: "pkcs8", format: "pem" }).toString()
  }
  clientCa = {
    name: Buffer.from(pki.clientCa.certificate.subjectName.toArrayBuffer()),
    key: KeyObject.from(pki.clientCa.privateKey)
  }
  serverChain = splitPemChain(pki.serverCertificateChain)
  // Warm up (JIT, first-connection allocations) with one health check, then take the baselines:
  // the relay's one connection on its ports is the steady gateway's tunnel.
  await relayIsHealthy("warm-up")
  await eventually(() => relayConnections(pid, [h.sshPort, h.tlsPort]) === 1, "only the steady tunnel open after warm-up")
  baseline = { connections: 1, rss: rss(pid) }
  console.log(`fuzz baseline: ${baseline.connections} relay connections, RSS ${(baseline.rss / MiB).toFixed(0)} MiB, seed ${fuzzParameters(1).seed}`)
}, 120_000)

afterAll(async () => {
  if (rssSamples.length > 0) {
    const peak = Math.max(...rssSamples)
    console.log(`fuzz RSS: baseline ${(baseline.rss / MiB).toFixed(0)} MiB, peak ${(peak / MiB).toFixed(0)} MiB (+${((peak - baseline.rss) / MiB).toFixed(1)} MiB), open fds ${openFds(pid)}`)
  }
  await h?.close()
})

/** An echo session through `gatewayId`'s tunnel: what the client sends comes back, then EOF. */
const echoThrough = async (gatewayId: string, label: string) => {
  const socket: tls.TLSSocket = await h.dialRelay(gatewayId)
  const message = `${label} ${randomBytes(8).toString("hex")}`
  const back = readAll(socket)
  socket.end(message)
  expect((await back).toString()).toBe(message)
}

/** The batch assertions: alive, no crash logged, good sessions end to end, no leak, bounded memory. */
const relayIsHealthy = async (batch: string) => {
  const child = h.relayProcess!.child
  expect(child.exitCode, `relay exited after ${batch}`).toBeNull()
  expect(child.signalCode, `relay killed after ${batch}`).toBeNull()
  expect(h.relayProcess!.output()).not.toMatch(CRASH_PATTERN)
  // The tunnel that lived through the batch still carries sessions...
  await echoThrough(steady.gatewayId, batch)
  // ...and a new gateway (Go x/crypto) can still log in on the SSH port and serve one.
  const fresh = await h.quickGateway("echo")
  await echoThrough(fresh.gatewayId, batch)
  await fresh.peer.kill()
  if (baseline !== undefined) {
    const ports = [h.sshPort, h.tlsPort]
    await eventually(() => relayConnections(pid, ports) === baseline.connections, `relay connections back to ${baseline.connections} after ${batch} (now ${relayConnections(pid, ports)})`, 20_000)
    const now = rss(pid)
    rssSamples.push(now)
    expect(now - baseline.rss, `RSS growth after ${batch}`).toBeLessThan(RSS_TOLERANCE)
  }
}

// ---------------------------------------------------------------------------------------------
// SSH: shared pieces

const VERSION = Buffer.from("SSH-2.0-Fuzzer_1.0\r\n")
const STRICT_C = "kex-strict-c-v00@openssh.com"
const HOST_KEY_ALGORITHMS = ["rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com"]

const nameList = (names: ReadonlyArray<string>) => Buffer.from(names.join(","), "latin1")
/** Our full lists (kex restricted to `kex`), as ten raw name-lists. */
const realLists = (kex: ReadonlyArray<string>): Array<Buffer> => [
  nameList(kex),
  nameList(HOST_KEY_ALGORITHMS),
  nameList(CIPHER_ALGORITHMS),
  nameList(CIPHER_ALGORITHMS),
  nameList(MAC_ALGORITHMS),
  nameList(MAC_ALGORITHMS),
  nameList(["none"]),
  nameList(["none"]),
  nameList([]),
  nameList([])
]
const kexInit = (kex: ReadonlyArray<string>) =>
  kexInitPayload({ cookie: randomBytes(16), lists: realLists(kex), firstKexFollows: 0, reserved: 0 })

/** A valid X25519 public value. */
const x25519Public = (): Buffer => Buffer.from(generateKeyPairSync("x25519").publicKey.export({ format: "jwk" }).x!, "base64url")
const kexdhInit = (publicValue: Buffer, mpint = false) => {
  const w = sshWriter().byte(MSG.KEXDH_INIT)
  return Buffer.from((mpint ? w.mpintFromUnsigned(publicValue) : w.bytes(publicValue)).toBuffer())
}

/** A name as RFC 4251 allows it: printable US-ASCII without a comma, 1 to 64 characters. */
const validName = fc.stringMatching(/^[!-+\--~]{1,64}$/)

/** Split bytes into up to six writes at random points. */
const chunked = (bytes: Buffer, cuts: ReadonlyArray<number>): Array<Buffer> => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Array<Buffer> = []
  let prev = 0
  for (const p of [...points, bytes.length]) {
    if (p > prev) out.push(bytes.subarray(prev, p))
    prev = p
  }
  return out.length === 0 ? [bytes] : out
}

/** A raw client that has completed a real key exchange with the relay. */
const keyedClient = async (o: { cipher?: string; mac?: string; strictKex?: boolean } = {}): Promise<RawClient> => {
  const rc = rawClient(h.sshPort, {
    ...(o.cipher !== undefined || o.mac !== undefined
      ? { algorithms: { ...(o.cipher ? { cipher: [o.cipher] } : {}), ...(o.mac ? { mac: [o.mac] } : {}) } }
      : {}),
    ...(o.strictKex !== undefined ? { strictKex: o.strictKex } : {})
  })
  rc.socket.on("error", () => {})
  await rc.ready
  return rc
}

/** Wait (bounded) for the connection to end, ending our side first when `end`. */
const closed = async (rc: RawClient, end: "disconnect" | "socket" | "none") => {
  if (end === "disconnect") rc.transport.disconnect()
  else if (end === "socket") rc.socket.end()
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    rc.closed,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("the relay kept an SSH connection open after the client's EOF")), 10_000)))
  ])
  clearTimeout(timer)
}

const serviceRequest = () => Buffer.from(sshWriter().byte(MSG.SERVICE_REQUEST).string("ssh-userauth").toBuffer())

/** A keyed client past SERVICE_ACCEPT. */
const userauthReady = async () => {
  const rc = await keyedClient()
  rc.send(serviceRequest())
  const accept = await nextOfType(rc, [MSG.SERVICE_ACCEPT])
  expect(accept, "SERVICE_ACCEPT").toBeDefined()
  return rc
}

/** A raw client logged in as the fuzz gateway with its real certificate. */
const loggedIn = async () => {
  const rc = await userauthReady()
  rc.send(userauthRequest({
    sessionId: rc.transport.sessionId!,
    user: fuzzGateway.gatewayId,
    algorithm: "rsa-sha2-256-cert-v01@openssh.com",
    blob: fuzzGateway.blob,
    key: fuzzGateway.key
  }))
  const reply = await nextOfType(rc, [MSG.USERAUTH_SUCCESS, MSG.USERAUTH_FAILURE])
  expect(reply?.[0], "login with the control plane's certificate").toBe(MSG.USERAUTH_SUCCESS)
  return rc
}

// ---------------------------------------------------------------------------------------------
// SSH before encryption

describe("SSH port, before encryption", () => {
  it("identification line: mutated, overlong, binary and chunked banners", async () => {
    const banner = fc.oneof(
      fc.tuple(fc.constantFrom("SSH-2.0-Go\r\n", "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", "SSH-1.99-Legacy\r\n"), byteMutation)
        .map(([b, m]) => mutate(Buffer.from(b), m)),
      fc.tuple(fc.integer({ min: 230, max: 1100 }), fc.constantFrom("\r\n", "\n", "")).map(([n, end]) => Buffer.from(`SSH-2.0-${"x".repeat(n)}${end}`)),
      fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.concat([Buffer.from("SSH-2.0-"), b, Buffer.from("\r\n")])),
      fc.array(fc.string({ maxLength: 80 }), { minLength: 1, maxLength: 5 })
        .map((lines) => Buffer.from(lines.map((l) => `${l.replace(/[\r\n]/g, "")}\r\n`).join("") + "SSH-2.0-Go\r\n"))
    )
    const after = fc.oneof(
      fc.constant(Buffer.alloc(0)),
      fc.constant(frameNone(kexInit(["curve25519-sha256"]))),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b))
    )
    await fc.assert(
      fc.asyncProperty(banner, after, fc.array(fc.nat(), { maxLength: 5 }), async (line, rest, cuts) => {
        const received = await exchange(h.sshPort, chunked(Buffer.concat([line, rest]), cuts))
        // The relay speaks first, and never goes past its own KEXINIT (or a DISCONNECT) here.
        if (received.length > 0) expect(received.subarray(0, 8).toString("latin1")).toBe("SSH-2.0-")
        for (const t of parsePlainStream(received).types) expect([MSG.KEXINIT, MSG.DISCONNECT]).toContain(t)
      }),
      fuzzParameters(60)
    )
    await relayIsHealthy("identification line")
  }, fuzzTimeout(60, 100))

  it("KEXINIT: junk names around real ones never stop the key exchange", async () => {
    // RFC 4253 §7.1: the first name on the client's list the server also supports wins; names the
    // server does not know are skipped. The reserved field is ignored.
    const junk = fc.array(validName, { maxLength: 6 })
    await fc.assert(
      fc.asyncProperty(fc.array(junk, { minLength: 10, maxLength: 10 }), uint32Edge, async (junks, reserved) => {
        const real: Array<ReadonlyArray<string>> = [
          ["curve25519-sha256"], HOST_KEY_ALGORITHMS, CIPHER_ALGORITHMS, CIPHER_ALGORITHMS, MAC_ALGORITHMS, MAC_ALGORITHMS,
          ["none"], ["none"], [], []
        ]
        const lists = real.map((names, i) => nameList([...junks[i]!.filter((n) => !names.includes(n)), ...names]))
        const init = kexInitPayload({ cookie: randomBytes(16), lists, firstKexFollows: 0, reserved })
        const received = await exchange(h.sshPort, [VERSION, frameNone(init), frameNone(kexdhInit(x25519Public()))])
        const { types } = parsePlainStream(received)
        expect(types).toContain(MSG.KEXDH_REPLY)
        expect(types).toContain(MSG.NEWKEYS)
      }),
      fuzzParameters(25)
    )
  }, fuzzTimeout(25, 100))

  it("KEXINIT: mutated name-lists, flags, lengths and padding", async () => {
    const list = fc.oneof(
      fc.constantFrom(...realLists(KEX_ALGORITHMS)),
      fc.array(fc.oneof(validName, fc.string({ maxLength: 70 }), fc.constant("")), { maxLength: 10 }).map((n) => Buffer.from(n.join(","), "utf8")),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.integer({ min: 100, max: 3000 }).map((n) => nameList(Array.from({ length: n }, (_, i) => `a${i}`))),
      fc.integer({ min: 65, max: 40_000 }).map((n) => Buffer.from("x".repeat(n)))
    )
    const init = fc.record({
      cookie: fc.uint8Array({ minLength: 16, maxLength: 16 }),
      lists: fc.array(list, { minLength: 10, maxLength: 10 }),
      firstKexFollows: fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 2, max: 255 })),
      reserved: uint32Edge
    }).map(kexInitPayload)
    const framing = fc.oneof(
      fc.constant({}),
      fc.record({ padding: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 })) }),
      fc.record({ lengthDelta: fc.oneof(fc.integer({ min: -12, max: 12 }), fc.constantFrom(-0x7fff_ffff, 0x4000_0000)) })
    )
    const follow = fc.constantFrom("none", "kexdh", "newkeys", "kexinit")
    await fc.assert(
      fc.asyncProperty(init, framing, fc.option(byteMutation, { nil: undefined }), follow, async (payload, frame, m, next) => {
        const packet = frameNone(payload, frame)
        const followUp = {
          none: [],
          kexdh: [frameNone(kexdhInit(x25519Public()))],
          newkeys: [frameNone(Buffer.from([MSG.NEWKEYS]))],
          kexinit: [frameNone(kexInit(["curve25519-sha256"]))]
        }[next]
        await exchange(h.sshPort, [VERSION, m === undefined ? packet : mutate(packet, m), ...followUp])
      }),
      fuzzParameters(60)
    )
    await relayIsHealthy("KEXINIT")
  }, fuzzTimeout(60, 150))

  it("the KEX init message: invalid public values are refused, valid ones answered", async () => {
    const groups = { "diffie-hellman-group14-sha256": "modp14", "diffie-hellman-group16-sha512": "modp16" } as const
    const p25519 = (2n ** 255n - 19n)
    const le32 = (v: bigint) => Buffer.from(v.toString(16).padStart(64, "0"), "hex").reverse()
    /** X25519 inputs whose shared secret is all zero (RFC 8731 §3: abort). */
    const lowOrder = [
      0n, 1n, p25519 - 1n, p25519, p25519 + 1n,
      0x00b8495f16056286fdb1329ceb8d09da6ac49ff1fae35616aeb8413b7c7aebe0n,
      0x57119fd0dd4e22d8868e1c58c45c44045bef839c55b1d0b1248c50a3bc959c5fn
    ].map(le32)
    type Case = { readonly kex: string; readonly value: Buffer; readonly mpint: boolean; readonly expect: "refuse" | "answer" | "either" }
    const curve: fc.Arbitrary<Case> = fc.oneof(
      fc.constantFrom(...lowOrder).map((value) => ({ kex: "curve25519-sha256", value, mpint: false, expect: "refuse" as const })),
      fc.integer({ min: 0, max: 80 }).filter((n) => n !== 32).map((n) => ({ kex: "curve25519-sha256@libssh.org", value: randomBytes(n), mpint: false, expect: "refuse" as const })),
      fc.constant(null).map(() => ({ kex: "curve25519-sha256", value: x25519Public(), mpint: false, expect: "answer" as const })),
      fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => ({ kex: "curve25519-sha256", value: Buffer.from(b), mpint: false, expect: "either" as const }))
    )
    const dh: fc.Arbitrary<Case> = fc.constantFrom(...(Object.keys(groups) as Array<keyof typeof groups>)).chain((kex) => {
      const group = getDiffieHellman(groups[kex])
      const p = BigInt(`0x${group.getPrime("hex")}`)
      const mag = (v: bigint) => (v === 0n ? Buffer.alloc(0) : Buffer.from(v.toString(16).padStart(Math.ceil(v.toString(16).length / 2) * 2, "0"), "hex"))
      return fc.oneof(
        // RFC 4253 §8: e outside [1, p-1] must not be accepted; 1 and p-1 are refused too (OpenSSH does).
        fc.constantFrom(0n, 1n, p - 1n, p, p + 1n, 2n ** 8200n).map((v) => ({ kex, value: mag(v), mpint: true, expect: "refuse" as const })),
        fc.bigInt({ min: p, max: 2n * p }).map((v) => ({ kex, value: mag(v), mpint: true, expect: "refuse" as const })),
        // a negative mpint (high bit set, no leading zero)
        fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => ({ kex, value: Buffer.from([0x80 | b[0]!, ...b.subarray(1)]), mpint: false, expect: "refuse" as const })),
        fc.constant(null).map(() => {
          group.generateKeys()
          return { kex, value: group.getPublicKey(), mpint: true, expect: "answer" as const }
        }),
        fc.bigInt({ min: 2n, max: p - 2n }).map((v) => ({ kex, value: mag(v), mpint: true, expect: "either" as const }))
      )
    })
    await fc.assert(
      fc.asyncProperty(fc.oneof(curve, dh), fc.option(byteMutation, { nil: undefined }), async (c, m) => {
        let message: Buffer = kexdhInit(c.value, c.mpint)
        // A mutated message decides nothing by itself.
        const expected = m === undefined ? c.expect : "either"
        if (m !== undefined) message = mutate(message, m)
        const received = await exchange(h.sshPort, [VERSION, frameNone(kexInit([c.kex])), frameNone(message)])
        const answered = parsePlainStream(received).types.includes(MSG.KEXDH_REPLY)
        if (expected === "refuse") expect(answered, `${c.kex} public value ${c.value.toString("hex").slice(0, 80)}`).toBe(false)
        if (expected === "answer") expect(answered).toBe(true)
      }),
      fuzzParameters(60)
    )
    await relayIsHealthy("KEX init message")
  }, fuzzTimeout(60, 300))

  it("message order before NEWKEYS: the relay answers only a well-ordered key exchange", async () => {
    type Step = "kexinit" | "kexdh" | "newkeys" | "ignore" | "debug" | "unimplemented" | "service" | "userauth" | "random"
    const step = fc.constantFrom<Step>("kexinit", "kexdh", "newkeys", "ignore", "debug", "unimplemented", "service", "userauth", "random")
    // Types never valid from a client before its first NEWKEYS.
    const badType = fc.oneof(fc.constant(0), fc.integer({ min: 5, max: 19 }), fc.integer({ min: 22, max: 29 }), fc.integer({ min: 31, max: 255 }))
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 6 }), fc.boolean(), badType, async (steps, strict, randomType) => {
        const markers = strict ? [STRICT_C] : []
        const packet = (s: Step): Buffer => {
          switch (s) {
            case "kexinit": return frameNone(kexInitPayload({ cookie: randomBytes(16), lists: realLists(["curve25519-sha256", ...markers]), firstKexFollows: 0, reserved: 0 }))
            case "kexdh": return frameNone(kexdhInit(x25519Public()))
            case "newkeys": return frameNone(Buffer.from([MSG.NEWKEYS]))
            case "ignore": return frameNone(sshWriter().byte(MSG.IGNORE).string("x").toBuffer())
            case "debug": return frameNone(sshWriter().byte(MSG.DEBUG).boolean(false).string("dbg").string("").toBuffer())
            case "unimplemented": return frameNone(sshWriter().byte(MSG.UNIMPLEMENTED).uint32(7).toBuffer())
            case "service": return frameNone(serviceRequest())
            case "userauth": return frameNone(userauthRequest({ sessionId: Buffer.alloc(32), user: "x", algorithm: "ssh-rsa-cert-v01@openssh.com", blob: fuzzGateway.blob }))
            case "random": return frameNone(Buffer.concat([Buffer.from([randomType]), randomBytes(8)]))
          }
        }
        // RFC 4253 §7.1 (+ strict KEX: KEXINIT first, nothing else until NEWKEYS): the reply comes
        // only for KEXINIT then KEXDH_INIT with nothing between but ignorable messages (none in strict).
        const firstDh = steps.indexOf("kexdh")
        const before = firstDh < 0 ? steps : steps.slice(0, firstDh)
        const ignorable = (s: Step) => s === "ignore" || s === "debug" || s === "unimplemented"
        const wellOrdered =
          firstDh >= 0 &&
          before.filter((s) => s === "kexinit").length === 1 &&
          before.every((s) => s === "kexinit" || (!strict && ignorable(s))) &&
          (!strict || before[0] === "kexinit")
        const packets: Array<Uint8Array | { until: (b: Buffer) => boolean }> = steps.map(packet)
        if (firstDh >= 0) packets.splice(firstDh + 1, 0, { until: (b) => parsePlainStream(b).types.includes(MSG.KEXDH_REPLY) })
        const received = await exchange(h.sshPort, [VERSION, ...packets])
        expect(parsePlainStream(received).types.includes(MSG.KEXDH_REPLY), `steps ${steps.join(",")} strict=${strict}`).toBe(wellOrdered)
      }),
      fuzzParameters(60)
    )
    await relayIsHealthy("message order")
  }, fuzzTimeout(60, 100))
})

// ---------------------------------------------------------------------------------------------
// SSH after the key exchange

describe("SSH port, encrypted, before authentication", () => {
  const algorithms = fc.record({
    cipher: fc.constantFrom(...CIPHER_ALGORITHMS),
    mac: fc.constantFrom(...MAC_ALGORITHMS),
    strictKex: fc.boolean()
  })

  it("bad MACs, bad padding and corrupted lengths are never acted upon", async () => {
    type Attack =
      | { readonly kind: "corrupt"; readonly m: ByteMutation }
      | { readonly kind: "padding"; readonly small: boolean; readonly pick: number }
      | { readonly kind: "length"; readonly length: number }
    const attack: fc.Arbitrary<Attack> = fc.oneof(
      byteMutation.map((m) => ({ kind: "corrupt" as const, m })),
      fc.record({ kind: fc.constant("padding" as const), small: fc.boolean(), pick: fc.nat() }),
      fc.record({ kind: fc.constant("length" as const), length: uint32Edge })
    )
    await fc.assert(
      fc.asyncProperty(algorithms, attack, async (algs, a) => {
        const rc = await keyedClient(algs)
        const t = rc.transport
        // A SERVICE_REQUEST the relay would answer with SERVICE_ACCEPT, were it intact.
        const plain = plainPacket(t, serviceRequest())
        let wire: Buffer
        let intact = false
        if (a.kind === "padding") {
          // padding_length < 4, or more than the packet holds (RFC 4253 §6)
          const packetLength = plain.length - 4
          const bad = a.small ? a.pick % 4 : packetLength - 1 + (a.pick % Math.max(1, 257 - packetLength))
          wire = sealForged(t, plainPacket(t, serviceRequest(), bad & 0xff))
          intact = (bad & 0xff) >= 4 && (bad & 0xff) + 2 <= packetLength
        } else {
          const sealed = sealForged(t, plain)
          if (a.kind === "length") {
            wire = Buffer.from(sealed)
            wire.writeUInt32BE(a.length >>> 0, 0)
          } else {
            wire = mutate(sealed, a.m)
          }
          intact = wire.length >= sealed.length && wire.subarray(0, sealed.length).equals(sealed)
        }
        rc.socket.write(wire)
        rc.socket.end()
        await closed(rc, "none")
        const answered = (await collectUntilClosed(rc)).some((msg) => msg[0] === MSG.SERVICE_ACCEPT)
        if (!intact) expect(answered, `${a.kind} with ${algs.cipher}/${algs.mac}`).toBe(false)
      }),
      fuzzParameters(50)
    )
    await relayIsHealthy("bad MACs and padding")
  }, fuzzTimeout(50, 300))

  it("unknown message numbers get UNIMPLEMENTED; truncated messages never authenticate", async () => {
    // RFC 4253 §11.4: an unrecognized message is answered with UNIMPLEMENTED (its sequence number).
    const unassigned = fc.oneof(fc.constant(0), fc.integer({ min: 8, max: 19 }), fc.integer({ min: 22, max: 29 }))
    const other = fc.oneof(fc.integer({ min: 31, max: 49 }), fc.integer({ min: 51, max: 255 }), fc.constant(6))
    const truncatedOf = fc.constantFrom("service", "userauth", "disconnect", "debug", "ignore", "extinfo", "kexinit", "global")
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ kind: fc.constant("unassigned" as const), type: unassigned, body: fc.uint8Array({ maxLength: 64 }) }),
          fc.record({ kind: fc.constant("other" as const), type: other, body: fc.uint8Array({ maxLength: 64 }) }),
          fc.record({ kind: fc.constant("truncated" as const), of: truncatedOf, cut: fc.nat() })
        ),
        async (c) => {
          const rc = await keyedClient()
          const internals = rc.transport as unknown as { sendSeq: number }
          if (c.kind === "truncated") {
            const full = {
              service: serviceRequest(),
              userauth: userauthRequest({ sessionId: rc.transport.sessionId!, user: fuzzGateway.gatewayId, algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: fuzzGateway.blob, key: fuzzGateway.key }),
              disconnect: Buffer.from(sshWriter().byte(MSG.DISCONNECT).uint32(11).string("bye").string("").toBuffer()),
              debug: Buffer.from(sshWriter().byte(MSG.DEBUG).boolean(true).string("message").string("en").toBuffer()),
              ignore: Buffer.from(sshWriter().byte(MSG.IGNORE).string("padding").toBuffer()),
              extinfo: Buffer.from(sshWriter().byte(MSG.EXT_INFO).uint32(1).string("server-sig-algs").string("rsa-sha2-256").toBuffer()),
              kexinit: kexInit(KEX_ALGORITHMS),
              global: Buffer.from(sshWriter().byte(MSG.GLOBAL_REQUEST).string("keepalive@openssh.com").boolean(true).toBuffer())
            }[c.of]
            if (c.of === "userauth") rc.send(serviceRequest())
            rc.send(full.subarray(0, 1 + (c.cut % (full.length - 1))))
            await closed(rc, "disconnect")
            const messages = await collectUntilClosed(rc)
            expect(messages.some((m) => m[0] === MSG.USERAUTH_SUCCESS)).toBe(false)
            return
          }
          const unimplemented = recordUnimplemented(rc.transport)
          const seq = internals.sendSeq
          rc.send(Buffer.concat([Buffer.from([c.type]), c.body]))
          rc.send(serviceRequest())
          if (c.kind === "unassigned") {
            // The relay answers in order: UNIMPLEMENTED, then SERVICE_ACCEPT.
            expect(await nextOfType(rc, [MSG.SERVICE_ACCEPT]), "the connection goes on").toBeDefined()
            expect(unimplemented.map((m) => new SshReader(m, 1).uint32()), `UNIMPLEMENTED for message ${c.type}`).toEqual([seq])
          }
          await closed(rc, "disconnect")
        }
      ),
      fuzzParameters(50)
    )
    await relayIsHealthy("unknown and truncated messages")
  }, fuzzTimeout(50, 300))
})

describe("SSH port, USERAUTH with mutated certificates", () => {
  const INT64 = 1n << 63n
  const now = () => BigInt(Math.floor(Date.now() / 1000))

  interface Template {
    readonly certType: number
    readonly keyId: string
    readonly principals: ReadonlyArray<string>
    readonly validity: "normal" | "expired" | "future" | "afterInt64" | "beforeInt64" | "forever"
    readonly critical: ReadonlyArray<string>
    readonly user: "principal0" | "principal1" | "gateway" | "other"
    readonly signer: "clientCa" | "serverCa" | "self"
    readonly keyType: "gateway" | "ed25519"
    readonly signed: boolean
  }
  const template: fc.Arbitrary<Template> = fc.record({
    certType: fc.oneof(fc.constant(CERT_TYPE_USER), fc.constantFrom(0, 2, 3), fc.integer({ min: 0, max: 0xffff_ffff })),
    keyId: fc.oneof(
      fc.constant(`client-${relayName}`),
      fc.constantFrom("", "client-", `client-${relayName}\0`, `client-${relayName} `, `Client-${relayName}`, "relay-server"),
      fc.string({ maxLength: 40 }).map((s) => `client-${s}`)
    ),
    principals: fc.array(
      fc.oneof(fc.constant("gateway"), fc.constant(""), fc.uuid(), fc.string({ maxLength: 60 })),
      { maxLength: 6 }
    ),
    validity: fc.constantFrom("normal", "normal", "expired", "future", "afterInt64", "beforeInt64", "forever"),
    critical: fc.oneof(fc.constant([]), fc.subarray(["source-address", "force-command", "verify-required", "garbage@x"], { minLength: 1 })),
    user: fc.constantFrom("principal0", "principal1", "gateway", "other"),
    signer: fc.constantFrom("clientCa", "clientCa", "clientCa", "serverCa", "self"),
    keyType: fc.constantFrom("gateway", "gateway", "ed25519"),
    signed: fc.boolean()
  })
  const ed25519 = generateSshKey("ssh-ed25519")
  const otherRsaKey = generateSshKey("ssh-rsa")

  it("a certificate re-signed with one field changed is accepted exactly when protocol.md §4.1 says so", async () => {
    await fc.assert(
      fc.asyncProperty(template, async (t) => {
        const principals = t.principals.map((p) => (p === "gateway" ? fuzzGateway.gatewayId : p))
        const key = t.keyType === "gateway" ? fuzzGateway.key : ed25519
        const n = now()
        const validity = {
          normal: relativeValidity(3600),
          expired: { validAfter: n - 7200n, validBefore: n - 3600n },
          future: { validAfter: n + 3600n, validBefore: n + 7200n },
          afterInt64: { validAfter: INT64 + 5n, validBefore: CERT_TIME_INFINITY },
          beforeInt64: { validAfter: 0n, validBefore: INT64 + 5n },
          forever: { validAfter: 0n, validBefore: CERT_TIME_INFINITY }
        }[t.validity]
        const ca = { clientCa: sshCas.client.key, serverCa: sshCas.server.key, self: key }[t.signer]
        const blob = signCertificate(
          publicKeyOf(key),
          {
            certType: t.certType,
            keyId: t.keyId,
            principals,
            ...validity,
            criticalOptions: t.critical.map((name) => [name, Buffer.from(sshWriter().string("x").toBuffer())] as const),
            extensions: [["permit-pty", new Uint8Array(0)]]
          },
          ca
        )
        const user = { principal0: principals[0] ?? "nobody", principal1: principals[1] ?? "nobody", gateway: fuzzGateway.gatewayId, other: randomUUID() }[t.user]
        // The rules of protocol.md §4.1, plus the stricter CA check it recommends.
        const accepted =
          t.signer === "clientCa" &&
          t.certType === CERT_TYPE_USER &&
          t.critical.every((c) => c === "source-address") &&
          principals.includes(user) &&
          (t.validity === "normal" || t.validity === "forever") &&
          principals[0] !== "" && principals[0] !== undefined &&
          t.keyId === `client-${relayName}`
        const rc = await userauthReady()
        rc.send(userauthRequest({
          sessionId: rc.transport.sessionId!,
          user,
          algorithm: key.type === "ssh-rsa" ? "rsa-sha2-256-cert-v01@openssh.com" : "ssh-ed25519-cert-v01@openssh.com",
          blob,
          ...(t.signed ? { key, signatureAlgorithm: key.type === "ssh-rsa" ? "rsa-sha2-256" as const : "ssh-ed25519" as const } : {})
        }))
        const reply = await nextOfType(rc, [MSG.USERAUTH_SUCCESS, MSG.USERAUTH_FAILURE, MSG.USERAUTH_PK_OK])
        await closed(rc, "disconnect")
        const expected = accepted ? (t.signed ? MSG.USERAUTH_SUCCESS : MSG.USERAUTH_PK_OK) : MSG.USERAUTH_FAILURE
        expect(reply?.[0], JSON.stringify({ ...t, principals, user })).toBe(expected)
      }),
      fuzzParameters(50)
    )
    await relayIsHealthy("re-signed certificates")
  }, fuzzTimeout(50, 300))

  it("bit flips, truncations, wrong key types and bad signatures never authenticate", async () => {
    const wrongAlgorithm = fc.constantFrom(
      "ssh-ed25519-cert-v01@openssh.com", "ssh-rsa", "rsa-sha2-256", "ssh-ed25519", "ssh-dss-cert-v01@openssh.com",
      "ecdsa-sha2-nistp256-cert-v01@openssh.com", "sk-ssh-ed25519-cert-v01@openssh.com", ""
    )
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ kind: fc.constant("flipped" as const), m: byteMutation, signed: fc.boolean() }),
          fc.record({ kind: fc.constant("algorithm" as const), algorithm: wrongAlgorithm, signed: fc.boolean() }),
          fc.record({ kind: fc.constant("rawKey" as const), signed: fc.boolean() }),
          fc.record({ kind: fc.constant("signature" as const), m: byteMutation, how: fc.constantFrom("mutated", "otherSession", "otherKey", "sha512AsSha256") })
        ),
        async (c) => {
          // Decide everything that does not need the session before connecting (fc.pre skips a run).
          const flipped = c.kind === "flipped" ? mutate(fuzzGateway.blob, c.m) : undefined
          fc.pre(flipped === undefined || !flipped.equals(fuzzGateway.blob))
          const rc = await userauthReady()
          const sessionId = rc.transport.sessionId!
          const base = { sessionId, user: fuzzGateway.gatewayId, algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: fuzzGateway.blob }
          const signedIf = (yes: boolean) => (yes ? { key: fuzzGateway.key } : {})
          let request: Buffer
          switch (c.kind) {
            case "flipped":
              request = userauthRequest({ ...base, blob: flipped!, ...signedIf(c.signed) })
              break
            case "algorithm":
              request = userauthRequest({ ...base, algorithm: c.algorithm, ...signedIf(c.signed) })
              break
            case "rawKey":
              request = userauthRequest({ ...base, algorithm: "rsa-sha2-256", blob: publicKeyOf(fuzzGateway.key).blob, ...signedIf(c.signed) })
              break
            case "signature": {
              const good = userauthRequest({ ...base, key: fuzzGateway.key })
              // The signature string follows the fields of the unsigned request (same length).
              const at = userauthRequest(base).length
              const mutated = mutate(good.subarray(at), c.m)
              request = {
                mutated: mutated.equals(good.subarray(at)) ? Buffer.concat([good.subarray(0, at), Buffer.from([0, 0, 0, 1, 0])]) : Buffer.concat([good.subarray(0, at), mutated]),
                otherSession: userauthRequest({ ...base, sessionId: randomBytes(sessionId.length), key: fuzzGateway.key }),
                otherKey: userauthRequest({ ...base, key: otherRsaKey }),
                sha512AsSha256: userauthRequest({ ...base, key: fuzzGateway.key, signatureAlgorithm: "rsa-sha2-512" })
              }[c.how]
              break
            }
          }
          rc.send(request)
          const reply = await nextOfType(rc, [MSG.USERAUTH_SUCCESS, MSG.USERAUTH_FAILURE, MSG.USERAUTH_PK_OK])
          await closed(rc, "disconnect")
          expect(reply?.[0] === MSG.USERAUTH_SUCCESS || reply?.[0] === MSG.USERAUTH_PK_OK, JSON.stringify(c)).toBe(false)
        }
      ),
      fuzzParameters(50)
    )
    await relayIsHealthy("mutated certificates")
  }, fuzzTimeout(50, 300))
})

// ---------------------------------------------------------------------------------------------
// TLS port

describe("TLS port", () => {
  let hello: ClientHello

  beforeAll(async () => {
    const creds = await h.clientCredentials(steady.gatewayId)
    const record = await captureClientHello({ cert: creds.cert, key: creds.key, ca: [...creds.ca], servername: "127.0.0.1", minVersion: "TLSv1.2" })
    hello = parseClientHello(record)
    // The capture parses back to the very bytes the Node client sent.
    expect(handshakeRecords(encodeClientHelloMessage(hello), hello.recordVersion).equals(record)).toBe(true)
  })

  it("mutated ClientHellos: the relay answers only with TLS records, never plaintext", async () => {
    const u16s = (n: number) => fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: n }).map((a) => Buffer.from(a.flatMap((v) => [v >> 8, v & 0xff])))
    const ext = fc.record({ type: fc.oneof(fc.constantFrom(0, 10, 13, 16, 35, 43, 45, 51, 0xff01, 0x0a0a), fc.integer({ min: 0, max: 0xffff })), data: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) })
    const change = fc.oneof(
      fc.record({ what: fc.constant("cipherSuites" as const), value: fc.oneof(u16s(200), fc.uint8Array({ maxLength: 9 }).map((b) => Buffer.from(b))) }),
      fc.record({ what: fc.constant("compression" as const), value: fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b)) }),
      fc.record({ what: fc.constant("sessionId" as const), value: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)) }),
      fc.record({ what: fc.constant("legacyVersion" as const), value: fc.integer({ min: 0, max: 0xffff }) }),
      fc.record({ what: fc.constant("dropExtension" as const), index: fc.nat() }),
      fc.record({ what: fc.constant("duplicateExtension" as const), index: fc.nat() }),
      fc.record({ what: fc.constant("extensionBody" as const), index: fc.nat(), m: byteMutation }),
      fc.record({ what: fc.constant("addExtension" as const), ext }),
      fc.record({ what: fc.constant("hugeExtension" as const), size: fc.integer({ min: 1000, max: 70_000 }) }),
      fc.record({ what: fc.constant("shuffleExtensions" as const), seed: fc.nat() })
    )
    const lengths = fc.record({
      record: fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
      handshake: fc.option(fc.integer({ min: 0, max: 0xffffff }), { nil: undefined }),
      sessionId: fc.option(fc.integer({ min: 0, max: 0xff }), { nil: undefined }),
      cipherSuites: fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
      compression: fc.option(fc.integer({ min: 0, max: 0xff }), { nil: undefined }),
      extensions: fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
      extension: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 0xffff })), { nil: undefined })
    }, { requiredKeys: [] })
    await fc.assert(
      fc.asyncProperty(
        fc.array(change, { maxLength: 4 }),
        fc.option(lengths, { nil: undefined }),
        fc.integer({ min: 1, max: 16384 }),
        fc.option(byteMutation, { nil: undefined }),
        async (changes, forced, fragment, m) => {
          let extensions = [...hello.extensions]
          let h2: ClientHello = hello
          for (const c of changes) {
            const at = (i: number) => (extensions.length === 0 ? 0 : i % extensions.length)
            switch (c.what) {
              case "cipherSuites": case "compression": case "sessionId": h2 = { ...h2, [c.what]: c.value }; break
              case "legacyVersion": h2 = { ...h2, legacyVersion: c.value }; break
              case "dropExtension": extensions.splice(at(c.index), 1); break
              case "duplicateExtension": if (extensions.length > 0) extensions.push(extensions[at(c.index)]!); break
              case "extensionBody": if (extensions.length > 0) { const e = extensions[at(c.index)]!; extensions[at(c.index)] = { type: e.type, data: mutate(e.data, c.m) } } break
              case "addExtension": extensions.push(c.ext); break
              case "hugeExtension": extensions.push({ type: 0xfafa, data: Buffer.alloc(Math.min(c.size, 0xffff), 0x41) }); break
              case "shuffleExtensions": extensions = extensions.map((e, i) => [((i + 1) * (c.seed + 7)) % 1009, e] as const).sort((a, b) => a[0] - b[0]).map(([, e]) => e); break
            }
          }
          h2 = { ...h2, extensions }
          const { record, ...messageLengths } = forced ?? {}
          let bytes = handshakeRecords(encodeClientHelloMessage(h2, messageLengths), hello.recordVersion, fragment, record)
          if (m !== undefined) bytes = mutate(bytes, m)
          const answer = await exchange(h.tlsPort, [bytes])
          expect(tlsRecordsProblem(answer), `answer ${answer.subarray(0, 40).toString("hex")}`).toBeUndefined()
        }
      ),
      fuzzParameters(100)
    )
    await relayIsHealthy("ClientHellos")
  }, fuzzTimeout(100, 100))

  /** A leaf for the relay's client CA (or another issuer) with the given subject attributes and extensions. */
  const rawLeaf = (subject: Buffer, extensions: ReadonlyArray<Buffer>, issuer = clientCa, mangleTbs?: (tbs: Buffer) => Buffer) => ({
    cert: signRawCertificate({
      subject, extensions, subjectPublicKeyInfo: leafKey.spki, issuerName: issuer.name, issuerKey: issuer.key, serial: randomBytes(16),
      ...(mangleTbs ? { mangleTbs } : {})
    }),
    key: leafKey.pem,
    ca: serverChain
  })

  it("client certificates signed by the client CA with mutated subjects and extensions: no plaintext, nothing misrouted", async () => {
    const TAGS = { utf8: 0x0c, printable: 0x13, ia5: 0x16, numeric: 0x12, teletex: 0x14, bmp: 0x1e, universal: 0x1c, octets: 0x04, integer: 0x02 } as const
    const encode = (text: string, tag: keyof typeof TAGS): Buffer =>
      tag === "bmp" ? Buffer.from(text, "utf16le").swap16()
        : tag === "universal" ? Buffer.concat([...text].map((ch) => { const b = Buffer.alloc(4); b.writeUInt32BE(ch.codePointAt(0)!, 0); return b }))
          : Buffer.from(text, tag === "utf8" ? "utf8" : "latin1")
    type Value = { readonly text: string; readonly tag: keyof typeof TAGS; readonly raw?: Buffer }
    const text = fc.oneof(
      fc.constant("__steady__"),
      fc.uuid(), fc.constant(ZERO_UUID), fc.constant(""),
      fc.string({ maxLength: 60 }), fc.string({ unit: "binary", maxLength: 40 }),
      fc.integer({ min: 1000, max: 20_000 }).map((n) => "g".repeat(n))
    )
    const value: fc.Arbitrary<Value> = fc.oneof(
      { weight: 6, arbitrary: fc.record({ text, tag: fc.constantFrom<keyof typeof TAGS>("utf8", "utf8", "printable", "ia5", "teletex", "bmp") }) },
      fc.record({ text, tag: fc.constantFrom(...(Object.keys(TAGS) as Array<keyof typeof TAGS>)) }),
      // invalid encodings for the type: bad UTF-8, odd-length BMP, high bytes in ASCII types
      fc.record({ text: fc.constant(""), tag: fc.constantFrom("utf8", "bmp", "printable", "ia5") as fc.Arbitrary<keyof typeof TAGS>, raw: fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => Buffer.from(b)) })
    )
    const attribute = fc.record({ oid: fc.constantFrom(OID.CN, OID.CN, OID.O, OID.OU, "2.5.4.5", "1.2.3.4.5"), value })
    const gatewayInfo = fc.oneof(
      fc.constant(undefined),
      fc.record({ name: fc.string({ maxLength: 40 }) }).map((v) => Buffer.from(JSON.stringify(v))),
      fc.constantFrom("", "{", "null", "[]", "{\"name\":null}", "{\"name\":1}", "{\"NAME\":\"x\"}", "\"name\"").map((s) => Buffer.from(s)),
      fc.integer({ min: 1000, max: 30_000 }).map((n) => Buffer.from(JSON.stringify({ name: "n".repeat(n) }))),
      fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b))
    )
    const certificate = fc.record({
      rdns: fc.array(fc.array(attribute, { minLength: 1, maxLength: 3 }), { maxLength: 5 }),
      gatewayInfo,
      duplicateInfo: fc.boolean(),
      critical: fc.boolean(),
      eku: fc.constantFrom(OID.clientAuth, OID.clientAuth, OID.clientAuth, OID.serverAuth),
      tbsFlip: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { nil: undefined, freq: 8 })
    })
    let handshakes = 0
    let skipped = 0
    const before = await scrapeMetrics(statusPort)
    await fc.assert(
      fc.asyncProperty(certificate, async (c) => {
        const routable = (v: Value) => v.text === "__steady__"
        const subject = der.seq(...c.rdns.map((rdn) => der.set(...rdn.map((a) =>
          nameAttribute(a.oid, TAGS[a.value.tag], a.value.raw ?? encode(routable(a.value) ? steady.gatewayId : a.value.text, a.value.tag))))))
        const extensions = [...leafExtensions(c.eku)]
        if (c.gatewayInfo !== undefined) {
          extensions.push(extension("1.3.6.1.4.1.12345.100.3", c.critical, c.gatewayInfo))
          if (c.duplicateInfo) extensions.push(extension("1.3.6.1.4.1.12345.100.3", false, c.gatewayInfo))
        }
        const creds = rawLeaf(subject, extensions, clientCa, c.tbsFlip && ((tbs) => {
          const b = Buffer.from(tbs)
          b[c.tbsFlip![0] % b.length]! ^= c.tbsFlip![1]
          return b
        }))
        const probe = Buffer.from("fuzz-probe\n")
        let attempt
        try {
          attempt = await tlsAttempt(h.tlsPort, creds, probe)
        } catch (e) {
          // OpenSSL on the client side refused to load the certificate: it never reached the relay.
          if (/timed out|kept a TLS connection open/.test(String(e))) throw e
          skipped++
          return
        }
        if (attempt.secure) handshakes++
        expect(tlsRecordsProblem(attempt.wire), `relay wire bytes ${attempt.wire.subarray(0, 40).toString("hex")}`).toBeUndefined()
        // Only a certificate naming the connected steady gateway (in any string type Go accepts)
        // may be routed, and then the echo is exact; everyone else gets no application byte.
        const namesSteady = c.rdns.some((rdn) => rdn.some((a) => a.oid === OID.CN && routable(a.value) && a.value.raw === undefined))
        if (namesSteady && attempt.received.length > 0) expect(attempt.received.equals(probe)).toBe(true)
        else expect(attempt.received.length, `application bytes to a mutated client: ${attempt.received.toString("hex").slice(0, 80)}`).toBe(0)
      }),
      fuzzParameters(60)
    )
    const after = await scrapeMetrics(statusPort)
    const delta = (name: string, label = "") => metricSum(after, name, label) - metricSum(before, name, label)
    console.log(
      `client certificates: ${handshakes} client-side handshakes, ${skipped} not loadable by OpenSSL; relay: ` +
        `${delta("relay_sessions_refused_total", "bad_certificate")} bad_certificate, ${delta("relay_sessions_refused_total", "invalid_gateway_name")} invalid_gateway_name, ` +
        `${delta("relay_sessions_refused_total", "gateway_not_connected")} not connected, ${delta("relay_heartbeat_probes_total")} heartbeat probes, ` +
        `${delta("relay_sessions_total")} routed, ${delta("relay_tls_handshake_failures_total")} handshake failures`
    )
    await relayIsHealthy("client certificates")
  }, fuzzTimeout(60, 300))

  it("certificates from a wrong CA never get a byte", async () => {
    const foreignKeys = generateKeyPairSync("rsa", { modulusLength: 2048 })
    const issuers = {
      // the relay's own server CA: same hierarchy, not trusted for clients
      serverCa: { name: Buffer.from(relayPki.serverCa.certificate.subjectName.toArrayBuffer()), key: KeyObject.from(relayPki.serverCa.privateKey) },
      // an unrelated key claiming the client CA's name
      foreign: { name: clientCa.name, key: foreignKeys.privateKey }
    }
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("serverCa" as const, "foreign" as const), fc.constantFrom(steady.gatewayId, ZERO_UUID, randomUUID()), async (issuer, cn) => {
        const subject = der.seq(der.set(nameAttribute(OID.O, 0x13, Buffer.from("org"))), der.set(nameAttribute(OID.CN, 0x0c, Buffer.from(cn))))
        const creds = rawLeaf(subject, [...leafExtensions(), extension("1.3.6.1.4.1.12345.100.3", false, Buffer.from("{\"name\":\"gw\"}"))], issuers[issuer])
        // The client sends its leaf alone: a client that trusts the relay's server chain would
        // append the server CA and the relay CA (OpenSSL builds the chain from its trust store),
        // and then a server-CA leaf verifies, as it does against Go's pool (protocol.md §4.2).
        const attempt = await tlsAttempt(h.tlsPort, creds, Buffer.from("probe"), { verifyServer: false })
        expect(tlsRecordsProblem(attempt.wire)).toBeUndefined()
        expect(attempt.received.length, `${issuer} ${cn}: got ${JSON.stringify(attempt.received.toString())} secure=${attempt.secure} error=${attempt.error}`).toBe(0)
      }),
      fuzzParameters(10)
    )
    await relayIsHealthy("wrong CA")
  }, fuzzTimeout(10, 300))
})

// ---------------------------------------------------------------------------------------------
// SSH connection protocol, logged in with the control plane's certificate

describe("SSH port, connection protocol after a real gateway login", () => {
  /** Dial the fuzz gateway until the relay opens a channel on `rc` (the tunnel registers just after USERAUTH_SUCCESS). */
  const openedChannel = async (rc: RawClient): Promise<{ client: tls.TLSSocket; open: { sender: number; window: number; maxPacket: number } }> => {
    // One waiter for the CHANNEL_OPEN across attempts, so a refused attempt cannot leave a reader behind.
    const opening = nextOfType(rc, [MSG.CHANNEL_OPEN])
    for (let attempt = 0; attempt < 100; attempt++) {
      const client = await h.dialRelay(fuzzGateway.gatewayId)
      client.on("error", () => {})
      const clientClosed = new Promise<"refused">((resolve) => client.once("close", () => resolve("refused")))
      const open = await Promise.race([opening, clientClosed])
      if (open === undefined) throw new Error("the tunnel closed before the relay opened a channel")
      if (open !== "refused") {
        const r = new SshReader(open, 1)
        expect(r.string(256)).toBe("direct-tcpip")
        return { client, open: { sender: r.uint32(), window: r.uint32(), maxPacket: r.uint32() } }
      }
    }
    throw new Error("the relay never opened a channel on the fuzz gateway's tunnel")
  }

  const channelMsg = (type: number, recipient: number) => Buffer.from(sshWriter().byte(type).uint32(recipient).toBuffer())
  const data = (recipient: number, bytes: Uint8Array) => Buffer.from(sshWriter().byte(MSG.CHANNEL_DATA).uint32(recipient).bytes(bytes).toBuffer())
  const windowAdjust = (recipient: number, n: number) => Buffer.from(sshWriter().byte(MSG.CHANNEL_WINDOW_ADJUST).uint32(recipient).uint32(n >>> 0).toBuffer())

  it("garbage global requests are each answered with REQUEST_FAILURE and the tunnel keeps working", async () => {
    // protocol.md §4.1: every global request with want-reply gets REQUEST_FAILURE.
    const request = fc.record({ name: fc.string({ maxLength: 200 }), wantReply: fc.boolean(), body: fc.uint8Array({ maxLength: 300 }) })
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 6 }), async (requests) => {
        const rc = await loggedIn()
        for (const q of requests) {
          rc.send(Buffer.from(sshWriter().byte(MSG.GLOBAL_REQUEST).string(q.name).boolean(q.wantReply).raw(q.body).toBuffer()))
        }
        for (let i = requests.filter((q) => q.wantReply).length; i > 0; i--) {
          const reply = await nextOfType(rc, [MSG.REQUEST_FAILURE, MSG.REQUEST_SUCCESS])
          expect(reply?.[0]).toBe(MSG.REQUEST_FAILURE)
        }
        // The tunnel still routes: a client's bytes arrive on a channel the relay opens.
        const { client, open } = await openedChannel(rc)
        rc.send(Buffer.from(sshWriter().byte(MSG.CHANNEL_OPEN_CONFIRMATION).uint32(open.sender).uint32(7).uint32(65536).uint32(32768).toBuffer()))
        client.write("after garbage")
        const got = await nextOfType(rc, [MSG.CHANNEL_DATA])
        const r = new SshReader(got!, 1)
        expect(r.uint32()).toBe(7)
        expect(Buffer.from(r.bytes()).toString()).toBe("after garbage")
        const clientDone = new Promise((resolve) => client.once("close", resolve))
        await closed(rc, "disconnect")
        await clientDone
      }),
      fuzzParameters(15)
    )
    await relayIsHealthy("global requests")
  }, fuzzTimeout(15, 600))

  it("flow control: every byte arrives both ways, never beyond the window or max packet we declared", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          window: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3000 }), fc.constant(0xffff_ffff)),
          maxPacket: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 65, max: 70_000 }), fc.constant(0xffff_ffff)),
          adjust: fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.constant(0xffff_ffff)),
          upload: fc.uint8Array({ minLength: 1, maxLength: 3000 }),
          download: fc.array(fc.uint8Array({ minLength: 1, maxLength: 2000 }), { maxLength: 4 }),
          overflow: fc.boolean()
        }),
        async (c) => {
          const rc = await loggedIn()
          const { client, open } = await openedChannel(rc)
          const ours = 42
          rc.send(Buffer.from(sshWriter().byte(MSG.CHANNEL_OPEN_CONFIRMATION).uint32(open.sender).uint32(ours).uint32(c.window).uint32(c.maxPacket).toBuffer()))
          // Window adjusts overflowing 2^32 in total: the relay's allowance saturates, nothing breaks.
          let allowance = c.window
          if (c.overflow) {
            rc.send(windowAdjust(open.sender, 0xffff_ffff))
            rc.send(windowAdjust(open.sender, 0xffff_ffff))
            allowance = 0xffff_ffff
          }
          const received = readAll(client)
          client.end(Buffer.from(c.upload))
          // Read the client's bytes, granting more window whenever the relay has used it all.
          const up: Array<Buffer> = []
          let got = 0
          let packets = 0
          for (;;) {
            if (got === allowance && got < c.upload.length) {
              rc.send(windowAdjust(open.sender, c.adjust))
              allowance = Math.min(0xffff_ffff, allowance + c.adjust)
            }
            const m = await nextOfType(rc, [MSG.CHANNEL_DATA, MSG.CHANNEL_EOF, MSG.CHANNEL_CLOSE, MSG.CHANNEL_EXTENDED_DATA])
            expect(m, "channel messages until the client's EOF").toBeDefined()
            const r = new SshReader(m!, 1)
            expect(r.uint32(), "recipient is the id we gave").toBe(ours)
            if (m![0] !== MSG.CHANNEL_DATA) {
              expect(m![0]).toBe(MSG.CHANNEL_EOF)
              break
            }
            const bytes = Buffer.from(r.bytes())
            expect(bytes.length).toBeLessThanOrEqual(c.maxPacket)
            expect(bytes.length).toBeGreaterThan(0)
            got += bytes.length
            expect(got, "bytes beyond the window we granted").toBeLessThanOrEqual(allowance)
            expect(++packets).toBeLessThan(10_000)
            up.push(bytes)
          }
          expect(Buffer.concat(up).equals(Buffer.from(c.upload)), `upload: ${got} of ${c.upload.length} bytes`).toBe(true)
          // Then the gateway's direction, ended by EOF and CLOSE. (The gateway ends after the client
          // here: a gateway that ends first while the client's bytes wait for window loses them, as
          // the pump ends the session once the gateway's direction is written out.)
          for (const chunk of c.download) rc.send(data(open.sender, chunk))
          rc.send(channelMsg(MSG.CHANNEL_EOF, open.sender))
          rc.send(channelMsg(MSG.CHANNEL_CLOSE, open.sender))
          expect(Buffer.concat(c.download.map((d) => Buffer.from(d))).equals(await received)).toBe(true)
          await closed(rc, "disconnect")
        }
      ),
      fuzzParameters(20)
    )
    await relayIsHealthy("flow control")
  }, fuzzTimeout(20, 800))

  it("bogus ids and windows, unknown channels, gateway-side opens: nothing is misrouted and the client is released", async () => {
    type Target = "channel" | number
    const target: fc.Arbitrary<Target> = fc.oneof({ weight: 3, arbitrary: fc.constant("channel" as const) }, { weight: 1, arbitrary: uint32Edge })
    const op = fc.oneof(
      fc.record({ op: fc.constant("adjust" as const), to: target, n: uint32Edge }),
      fc.record({ op: fc.constant("data" as const), to: target, bytes: fc.uint8Array({ maxLength: 600 }) }),
      fc.record({ op: fc.constant("extended" as const), to: target, code: uint32Edge, bytes: fc.uint8Array({ maxLength: 100 }) }),
      fc.record({ op: fc.constantFrom("eof" as const, "close" as const, "success" as const, "failure" as const), to: target }),
      fc.record({ op: fc.constant("request" as const), to: target, name: fc.string({ maxLength: 40 }), wantReply: fc.boolean(), body: fc.uint8Array({ maxLength: 40 }) }),
      fc.record({ op: fc.constant("global" as const), name: fc.oneof(fc.string({ maxLength: 40 }), fc.constant("x".repeat(1500))), wantReply: fc.boolean(), body: fc.uint8Array({ maxLength: 40 }) }),
      fc.record({
        op: fc.constant("open" as const),
        type: fc.oneof(fc.constantFrom("session", "x11", "direct-tcpip", "forwarded-tcpip", "auth-agent@openssh.com"), fc.string({ maxLength: 30 })),
        sender: uint32Edge, window: uint32Edge, maxPacket: uint32Edge
      }),
      fc.record({ op: fc.constant("userauth" as const) }),
      fc.record({ op: fc.constant("random" as const), type: fc.integer({ min: 0, max: 255 }), body: fc.uint8Array({ maxLength: 40 }) })
    )
    const confirmation = fc.oneof(
      fc.record({ kind: fc.constant("valid" as const), window: uint32Edge, maxPacket: uint32Edge }),
      fc.record({ kind: fc.constant("bogus" as const), recipient: uint32Edge }),
      fc.record({ kind: fc.constant("failure" as const), code: uint32Edge, description: fc.string({ maxLength: 100 }) }),
      fc.record({ kind: fc.constant("truncated" as const), cut: fc.integer({ min: 1, max: 16 }) })
    )
    await fc.assert(
      fc.asyncProperty(confirmation, fc.array(fc.tuple(op, fc.option(fc.nat(), { nil: undefined })), { maxLength: 6 }), async (conf, ops) => {
        const rc = await loggedIn()
        const { client, open } = await openedChannel(rc)
        const clientReceived: Array<Buffer> = []
        client.on("data", (b: Buffer) => clientReceived.push(b))
        const clientClosed = new Promise((resolve) => client.once("close", resolve))
        const probe = randomBytes(64)
        const ours = 9
        const valid = sshWriter().byte(MSG.CHANNEL_OPEN_CONFIRMATION).uint32(open.sender).uint32(ours)
        let routed = false
        switch (conf.kind) {
          case "valid":
            rc.send(Buffer.from(valid.uint32(conf.window).uint32(conf.maxPacket).toBuffer()))
            routed = true
            break
          case "bogus": {
            const recipient = conf.recipient === open.sender ? (open.sender + 1) >>> 0 : conf.recipient
            rc.send(Buffer.from(sshWriter().byte(MSG.CHANNEL_OPEN_CONFIRMATION).uint32(recipient).uint32(ours).uint32(1 << 20).uint32(32768).toBuffer()))
          }
            break
          case "failure":
            rc.send(Buffer.from(sshWriter().byte(MSG.CHANNEL_OPEN_FAILURE).uint32(open.sender).uint32(conf.code).string(conf.description).string("").toBuffer()))
            break
          case "truncated":
            rc.send(Buffer.from(valid.uint32(65536).uint32(32768).toBuffer()).subarray(0, conf.cut))
            break
        }
        client.write(probe)
        // What the client may see: the CHANNEL_DATA we address to the channel after a valid
        // confirmation, up to our first EOF or CLOSE on it (a prefix of that, if the connection dies).
        const expectedDown: Array<Buffer> = []
        let downOpen = routed
        for (const [o, cut] of ops) {
          const to = "to" in o ? (o.to === "channel" ? open.sender : o.to) : 0
          let payload: Buffer
          switch (o.op) {
            case "adjust": payload = windowAdjust(to, o.n); break
            case "data": payload = data(to, o.bytes); break
            case "extended": payload = Buffer.from(sshWriter().byte(MSG.CHANNEL_EXTENDED_DATA).uint32(to).uint32(o.code).bytes(o.bytes).toBuffer()); break
            case "eof": payload = channelMsg(MSG.CHANNEL_EOF, to); break
            case "close": payload = channelMsg(MSG.CHANNEL_CLOSE, to); break
            case "success": payload = channelMsg(MSG.CHANNEL_SUCCESS, to); break
            case "failure": payload = channelMsg(MSG.CHANNEL_FAILURE, to); break
            case "request": payload = Buffer.from(sshWriter().byte(MSG.CHANNEL_REQUEST).uint32(to).string(o.name).boolean(o.wantReply).raw(o.body).toBuffer()); break
            case "global": payload = Buffer.from(sshWriter().byte(MSG.GLOBAL_REQUEST).string(o.name).boolean(o.wantReply).raw(o.body).toBuffer()); break
            case "open": payload = Buffer.from(sshWriter().byte(MSG.CHANNEL_OPEN).string(o.type).uint32(o.sender).uint32(o.window).uint32(o.maxPacket).toBuffer()); break
            case "userauth": payload = userauthRequest({ sessionId: rc.transport.sessionId!, user: fuzzGateway.gatewayId, algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: fuzzGateway.blob }); break
            case "random": payload = Buffer.concat([Buffer.from([o.type]), o.body]); break
          }
          const truncated = cut !== undefined && payload.length > 1
          if (truncated) payload = payload.subarray(0, 1 + (cut % (payload.length - 1)))
          rc.send(payload)
          if (!downOpen) continue
          if (truncated || !("to" in o) || to !== open.sender) {
            // A malformed or misaddressed message may end the connection, but adds nothing.
            if (o.op === "data" && truncated) downOpen = false
            continue
          }
          if (o.op === "data") expectedDown.push(Buffer.from(o.bytes))
          if (o.op === "eof" || o.op === "close") downOpen = false
        }
        await closed(rc, "disconnect")
        const fromRelay = await collectUntilClosed(rc)
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          clientClosed,
          new Promise((_, reject) => (timer = setTimeout(() => {
            // Release it here so that the leak stays this run's failure, not the next batch's.
            client.destroy()
            reject(new Error("the client's session outlived its tunnel"))
          }, 10_000)))
        ])
        clearTimeout(timer)
        const down = Buffer.concat(clientReceived)
        const allowed = Buffer.concat(expectedDown)
        expect(allowed.subarray(0, down.length).equals(down), `client got ${down.toString("hex").slice(0, 80)}`).toBe(true)
        // The relay never accepts a gateway-side open, and forwards only the client's bytes, to our id.
        expect(fromRelay.some((m) => m[0] === MSG.CHANNEL_OPEN_CONFIRMATION)).toBe(false)
        const up = Buffer.concat(fromRelay.filter((m) => m[0] === MSG.CHANNEL_DATA).map((m) => {
          const r = new SshReader(m, 1)
          expect(r.uint32()).toBe(ours)
          return Buffer.from(r.bytes())
        }))
        expect(probe.subarray(0, up.length).equals(up)).toBe(true)
      }),
      fuzzParameters(40)
    )
    await relayIsHealthy("connection protocol")
  }, fuzzTimeout(40, 800))

  it("a tunnel that dies right after confirming a channel releases the client's session", async () => {
    // The fuzzer's first find, as a plain case: the confirmation and the connection's end arrive
    // in one read, so the channel is gone before the session's pump starts on it.
    for (let i = 0; i < 3; i++) {
      const rc = await loggedIn()
      const { client, open } = await openedChannel(rc)
      const clientClosed = new Promise((resolve) => client.once("close", resolve))
      rc.send(Buffer.from(sshWriter().byte(MSG.CHANNEL_OPEN_CONFIRMATION).uint32(open.sender).uint32(1).uint32(65536).uint32(32768).toBuffer()))
      rc.transport.disconnect()
      let timer: NodeJS.Timeout | undefined
      const outcome = await Promise.race([clientClosed.then(() => "released"), new Promise((resolve) => (timer = setTimeout(() => resolve("leaked"), 10_000)))])
      clearTimeout(timer)
      client.destroy()
      expect(outcome, "the relay ends a session whose tunnel is gone").toBe("released")
    }
    await eventuallyAsync(async () => metricSum(await scrapeMetrics(statusPort), "relay_sessions_active") === 0, "no session left active")
    await relayIsHealthy("tunnel dies after confirming")
  }, 60_000)
})
