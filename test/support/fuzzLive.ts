/**
 * Support for fuzzing a running relay's ports (test/relay/fuzzLive.test.ts): byte mutations, raw
 * SSH framing and a forger for encrypted packets our Transport would never seal, TLS ClientHello
 * capture/parse/re-encode, a DER builder for client certificates with arbitrary subjects and
 * extensions (signed with a real CA key), a TLS client that records every byte the relay sends, and
 * what the test observes of the relay subprocess (its sockets on the relay ports, its RSS, /metrics).
 *
 * Plain Node and promises: this is test scaffolding around sockets and a subprocess.
 */
import { createCipheriv, createHmac, KeyObject, sign as cryptoSign } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import { Duplex } from "node:stream"
import * as tls from "node:tls"
import fc from "fast-check"
import { encodeOid } from "../../src/pki/der.ts"
import type { RawClient } from "../../src/ssh/testkit.ts"
import type { Transport } from "../../src/ssh/transport.ts"
import { publicKeySignedData } from "../../src/ssh/userauth.ts"
import { sign, type SshPrivateKey } from "../../src/ssh/keys.ts"
import { MSG } from "../../src/ssh/constants.ts"
import { SshWriter } from "../../src/ssh/wire.ts"

// ---------------------------------------------------------------------------------------------
// run control

/**
 * FUZZ_RUNS multiplies every property's default number of runs (default 1); FUZZ_SEED replaces the
 * fixed seed (fast-check prints the seed and the counterexample's path on failure).
 */
export const FUZZ_SCALE = Math.max(1, Number(process.env["FUZZ_RUNS"] ?? "1") || 1)
export const FUZZ_SEED = Number(process.env["FUZZ_SEED"] ?? "20240607")
export const fuzzParameters = (numRuns: number): fc.Parameters<unknown> => ({
  numRuns: Math.round(numRuns * FUZZ_SCALE),
  seed: FUZZ_SEED,
  // A counterexample against a live relay shrinks slowly; the first few shrink steps are enough
  // to make it readable, the seed and path reproduce it exactly.
  endOnFailure: process.env["FUZZ_SHRINK"] !== "1",
  timeout: 20_000
})

/** vitest timeout for a property of `numRuns` runs of about `msPerRun` each (plus the health check). */
export const fuzzTimeout = (numRuns: number, msPerRun: number): number =>
  60_000 + Math.round(numRuns * FUZZ_SCALE) * msPerRun * 4

// ---------------------------------------------------------------------------------------------
// byte mutations

/** Byte flips, an optional insertion and an optional truncation applied to a base buffer. */
export const byteMutation = fc.record({
  flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 6 }),
  insert: fc.option(fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 24 })), { nil: undefined }),
  truncate: fc.option(fc.nat(), { nil: undefined })
})
export type ByteMutation = typeof byteMutation extends fc.Arbitrary<infer T> ? T : never

export const mutate = (base: Uint8Array, m: ByteMutation): Buffer => {
  let b = Buffer.from(base)
  for (const [pos, x] of m.flips) if (b.length > 0) b[pos % b.length]! ^= x
  if (m.insert !== undefined) {
    const at = m.insert[0] % (b.length + 1)
    b = Buffer.concat([b.subarray(0, at), m.insert[1], b.subarray(at)])
  }
  if (m.truncate !== undefined) b = b.subarray(0, m.truncate % (b.length + 1))
  return b
}

/** Interesting 32-bit values: zero, one, sign and overflow boundaries, or anything. */
export const uint32Edge = fc.oneof(
  fc.constantFrom(0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff),
  fc.integer({ min: 0, max: 0xffff_ffff })
)

// ---------------------------------------------------------------------------------------------
// raw sockets

/**
 * Connect to 127.0.0.1:port, write `chunks` one by one (each its own write; an `until` entry waits
 * for what the relay has sent so far to satisfy it, or for the close), half-close, and collect what
 * comes back until the relay closes. A relay that keeps the connection open more than
 * `timeoutMs` after our EOF fails the run.
 */
export const exchange = (
  port: number,
  chunks: ReadonlyArray<Uint8Array | { readonly until: (received: Buffer) => boolean }>,
  timeoutMs = 10_000
): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const received: Array<Buffer> = []
    let onData: (() => void) | undefined
    const socket = net.connect({ port, host: "127.0.0.1", noDelay: true })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`the relay kept the connection open ${timeoutMs} ms after the client's EOF`))
    }, timeoutMs)
    socket.on("data", (c: Buffer) => {
      received.push(c)
      onData?.()
    })
    socket.on("error", () => {})
    socket.once("close", () => {
      clearTimeout(timer)
      onData?.()
      resolve(Buffer.concat(received))
    })
    socket.once("connect", async () => {
      for (const c of chunks) {
        if (socket.destroyed) break
        if (c instanceof Uint8Array) {
          await new Promise<void>((done) => socket.write(c, () => done()))
          continue
        }
        // Hold the rest until the relay has answered (or closed): what it sent before it had to
        // close is then read before the close can turn into a reset that discards it.
        await new Promise<void>((done) => {
          onData = () => {
            if (socket.destroyed || c.until(Buffer.concat(received))) {
              onData = undefined
              done()
            }
          }
          onData()
        })
      }
      socket.end()
    })
  })

// ---------------------------------------------------------------------------------------------
// SSH before the first NEWKEYS (no encryption)

export const sshWriter = (): SshWriter => new SshWriter()

/**
 * A none-cipher binary packet. `padding` overrides the padding length (the packet then may not be
 * block-aligned); `lengthDelta` is added to packet_length after framing.
 */
export const frameNone = (payload: Uint8Array, o: { padding?: number; lengthDelta?: number } = {}): Buffer => {
  let pad = 8 - ((5 + payload.length) % 8)
  if (pad < 4) pad += 8
  const padding = o.padding ?? pad
  const packetLength = (1 + payload.length + padding + (o.lengthDelta ?? 0)) >>> 0
  return Buffer.from(
    sshWriter()
      .uint32(packetLength)
      .byte(padding & 0xff)
      .raw(payload)
      .raw(Buffer.alloc(padding))
      .toBuffer()
  )
}

/** A KEXINIT payload from ten raw name-list strings (any bytes) and the trailing fields. */
export const kexInitPayload = (o: {
  readonly cookie: Uint8Array
  readonly lists: ReadonlyArray<Uint8Array>
  readonly firstKexFollows: number
  readonly reserved: number
}): Buffer => {
  const w = sshWriter().byte(MSG.KEXINIT).raw(o.cookie)
  for (const l of o.lists) w.bytes(l)
  return Buffer.from(w.byte(o.firstKexFollows).uint32(o.reserved).toBuffer())
}

/**
 * What the relay sent before encryption: its identification line and the message types of the
 * unencrypted packets that follow (up to and including its NEWKEYS).
 */
export const parsePlainStream = (bytes: Buffer): { version: string | undefined; types: Array<number> } => {
  const nl = bytes.indexOf(0x0a)
  if (nl < 0) return { version: undefined, types: [] }
  const version = bytes.subarray(0, nl).toString("latin1").replace(/\r$/, "")
  const types: Array<number> = []
  let off = nl + 1
  while (off + 5 <= bytes.length) {
    const len = bytes.readUInt32BE(off)
    if (len < 5 || off + 4 + len > bytes.length) break
    const padding = bytes[off + 4]!
    if (padding + 1 >= len) break
    const type = bytes[off + 5]!
    types.push(type)
    off += 4 + len
    if (type === MSG.NEWKEYS) break
  }
  return { version, types }
}

// ---------------------------------------------------------------------------------------------
// SSH after the key exchange: packets our Transport would never seal

interface SealerInternals {
  sealer: {
    // aes-gcm (GcmSealer)
    spec?: { nodeName: string }
    key?: Buffer
    iv?: Buffer
    // aes-ctr + hmac (CtrSealer)
    cipher?: { update(b: Buffer): Buffer }
    mac?: { hash: string; etm: boolean }
    macKey?: Buffer
  }
  sendSeq: number
}

/** Whether packet_length is sent in clear and left out of the block alignment (AEAD and ETM). */
export const lengthExcluded = (t: Transport): boolean => {
  const n = t.negotiated!
  return n.cipherCS.includes("gcm") || (n.macCS ?? "").includes("etm")
}

/**
 * packet_length || padding_length || payload || padding, block-aligned for the negotiated mode.
 * `paddingByte` overrides the padding_length byte only (the packet stays aligned).
 */
export const plainPacket = (t: Transport, payload: Uint8Array, paddingByte?: number): Buffer => {
  const excluded = lengthExcluded(t)
  const unpadded = (excluded ? 1 : 5) + payload.length
  let padding = 16 - (unpadded % 16)
  if (padding < 4) padding += 16
  const b = Buffer.alloc(5 + payload.length + padding)
  b.writeUInt32BE(1 + payload.length + padding, 0)
  b[4] = paddingByte ?? padding
  Buffer.from(payload).copy(b, 5)
  return b
}

/**
 * Encrypt and authenticate an arbitrary plaintext packet with the client transport's current
 * outgoing keys, as the next packet of its sequence. It reaches into the Transport's sealer
 * (src/ssh/cipher.ts: GcmSealer's key/iv, CtrSealer's cipher/mac): a forged packet must be sealed
 * exactly like a real one for the relay to get past the MAC to the part under test.
 */
export const sealForged = (t: Transport, plain: Buffer): Buffer => {
  const internals = t as unknown as SealerInternals
  const s = internals.sealer
  const seq = internals.sendSeq
  internals.sendSeq = (seq + 1) >>> 0
  const seqBytes = Buffer.alloc(4)
  seqBytes.writeUInt32BE(seq, 0)
  if (s.spec !== undefined && s.key !== undefined && s.iv !== undefined) {
    const c = createCipheriv(s.spec.nodeName as "aes-128-gcm", s.key, s.iv, { authTagLength: 16 })
    c.setAAD(plain.subarray(0, 4))
    const ciphertext = c.update(plain.subarray(4))
    c.final()
    const tag = c.getAuthTag()
    for (let i = 11; i >= 4; i--) {
      s.iv[i] = (s.iv[i]! + 1) & 0xff
      if (s.iv[i] !== 0) break
    }
    return Buffer.concat([plain.subarray(0, 4), ciphertext, tag])
  }
  if (s.cipher !== undefined && s.mac !== undefined && s.macKey !== undefined) {
    if (s.mac.etm) {
      const ciphertext = s.cipher.update(plain.subarray(4))
      const tag = createHmac(s.mac.hash, s.macKey).update(seqBytes).update(plain.subarray(0, 4)).update(ciphertext).digest()
      return Buffer.concat([plain.subarray(0, 4), ciphertext, tag])
    }
    const tag = createHmac(s.mac.hash, s.macKey).update(seqBytes).update(plain).digest()
    return Buffer.concat([s.cipher.update(plain), tag])
  }
  throw new Error("sealForged: unknown sealer (src/ssh/cipher.ts changed?)")
}

/**
 * UNIMPLEMENTED messages the peer sends from now on. Our Transport consumes them without telling
 * its handler, so this wraps its dispatch.
 */
export const recordUnimplemented = (t: Transport): Array<Buffer> => {
  const seen: Array<Buffer> = []
  const internals = t as unknown as { dispatch(payload: Buffer, seq: number): void }
  const dispatch = internals.dispatch.bind(t)
  internals.dispatch = (payload, seq) => {
    if (payload[0] === MSG.UNIMPLEMENTED) seen.push(Buffer.from(payload))
    dispatch(payload, seq)
  }
  return seen
}

/** A publickey USERAUTH_REQUEST; signed with `key` over this session when given. */
export const userauthRequest = (o: {
  readonly sessionId: Buffer
  readonly user: string
  readonly algorithm: string
  readonly blob: Uint8Array
  readonly key?: SshPrivateKey
  readonly signatureAlgorithm?: "rsa-sha2-256" | "rsa-sha2-512" | "ssh-ed25519"
}): Buffer => {
  const w = sshWriter()
    .byte(MSG.USERAUTH_REQUEST)
    .string(o.user)
    .string("ssh-connection")
    .string("publickey")
    .boolean(o.key !== undefined)
    .string(o.algorithm)
    .bytes(o.blob)
  if (o.key !== undefined) {
    const data = publicKeySignedData(o.sessionId, o.user, "ssh-connection", o.algorithm, o.blob)
    w.bytes(sign(o.key, o.signatureAlgorithm ?? "rsa-sha2-256", data))
  }
  return Buffer.from(w.toBuffer())
}

/** Every message the relay sends from now until the connection closes (payloads). */
export const collectUntilClosed = async (rc: RawClient): Promise<Array<Buffer>> => {
  const out: Array<Buffer> = []
  for (;;) {
    try {
      out.push(await rc.next())
    } catch {
      return out
    }
  }
}

/** The next message of one of `types` (others are skipped); undefined when the connection closes first. */
export const nextOfType = async (rc: RawClient, types: ReadonlyArray<number>): Promise<Buffer | undefined> => {
  for (;;) {
    let m: Buffer
    try {
      m = await rc.next()
    } catch {
      return undefined
    }
    if (types.includes(m[0]!)) return m
  }
}

// ---------------------------------------------------------------------------------------------
// TLS records and ClientHello

/** Why `bytes` is not a sequence of whole, well-formed TLS records; undefined when it is. */
export const tlsRecordsProblem = (bytes: Buffer): string | undefined => {
  let off = 0
  while (off < bytes.length) {
    if (off + 5 > bytes.length) return `truncated record header at ${off}`
    const type = bytes[off]!
    const version = bytes.readUInt16BE(off + 1)
    const len = bytes.readUInt16BE(off + 3)
    // The version field is not checked: OpenSSL answers a ClientHello with an odd legacy_version
    // with an alert record carrying that version.
    if (type < 20 || type > 23) return `content type ${type} (record version 0x${version.toString(16)}) at ${off}: not a TLS record (plaintext?)`
    if (len > 16384 + 2048) return `record length ${len} at ${off}`
    if (off + 5 + len > bytes.length) return `truncated record at ${off}`
    off += 5 + len
  }
  return undefined
}

export interface ClientHello {
  readonly recordVersion: number
  readonly legacyVersion: number
  readonly random: Buffer
  readonly sessionId: Buffer
  readonly cipherSuites: Buffer
  readonly compression: Buffer
  readonly extensions: ReadonlyArray<{ readonly type: number; readonly data: Buffer }>
}

/** Records from a real Node TLS client: what it sends first (its ClientHello), captured on a local listener. */
export const captureClientHello = (options: tls.ConnectionOptions): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const server = net.createServer((s) => {
      let buf = Buffer.alloc(0)
      s.on("data", (c: Buffer) => {
        buf = Buffer.concat([buf, c])
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          s.destroy()
          server.close()
          resolve(buf.subarray(0, 5 + buf.readUInt16BE(3)))
        }
      })
      s.on("error", () => {})
    })
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      const client = tls.connect({ ...options, host: "127.0.0.1", port })
      client.on("error", () => {})
    })
    server.on("error", reject)
  })

export const parseClientHello = (record: Buffer): ClientHello => {
  if (record[0] !== 22 || record[5] !== 1) throw new Error("not a ClientHello record")
  const body = record.subarray(9, 9 + record.readUIntBE(6, 3))
  let off = 0
  const take = (n: number) => {
    const b = body.subarray(off, off + n)
    off += n
    return Buffer.from(b)
  }
  const legacyVersion = body.readUInt16BE(0)
  off = 2
  const random = take(32)
  const sessionId = take(body[off++]!)
  const cipherSuites = take(body.readUInt16BE((off += 2) - 2))
  const compression = take(body[off++]!)
  const extensions: Array<{ type: number; data: Buffer }> = []
  const extEnd = off + 2 + body.readUInt16BE(off)
  off += 2
  while (off < extEnd) {
    const type = body.readUInt16BE(off)
    const len = body.readUInt16BE(off + 2)
    off += 4
    extensions.push({ type, data: take(len) })
  }
  return { recordVersion: record.readUInt16BE(1), legacyVersion, random, sessionId, cipherSuites, compression, extensions }
}

/** Length-prefix widths for lengths that may be forced to any value (wrapping to the field width). */
const u8 = (n: number) => Buffer.from([n & 0xff])
const u16 = (n: number) => {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n & 0xffff, 0)
  return b
}
const u24 = (n: number) => {
  const b = Buffer.alloc(3)
  b.writeUIntBE(n & 0xffffff, 0, 3)
  return b
}

export interface HelloLengthOverrides {
  readonly record?: number | undefined
  readonly handshake?: number | undefined
  readonly sessionId?: number | undefined
  readonly cipherSuites?: number | undefined
  readonly compression?: number | undefined
  readonly extensions?: number | undefined
  /** Extension index → forced length field. */
  readonly extension?: readonly [number, number] | undefined
}

/** The ClientHello handshake message (type, length, body), lengths computed unless overridden. */
export const encodeClientHelloMessage = (h: ClientHello, o: HelloLengthOverrides = {}): Buffer => {
  const exts = Buffer.concat(
    h.extensions.map((e, i) =>
      Buffer.concat([u16(e.type), u16(o.extension?.[0] === i ? o.extension[1] : e.data.length), e.data])
    )
  )
  const body = Buffer.concat([
    u16(h.legacyVersion),
    h.random,
    u8(o.sessionId ?? h.sessionId.length),
    h.sessionId,
    u16(o.cipherSuites ?? h.cipherSuites.length),
    h.cipherSuites,
    u8(o.compression ?? h.compression.length),
    h.compression,
    u16(o.extensions ?? exts.length),
    exts
  ])
  return Buffer.concat([u8(1), u24(o.handshake ?? body.length), body])
}

/** A handshake message split into records of at most `fragment` bytes (TLS allows any split). */
export const handshakeRecords = (message: Buffer, recordVersion: number, fragment = 16384, recordLength?: number): Buffer => {
  const out: Array<Buffer> = []
  for (let off = 0; off < message.length || out.length === 0; off += fragment) {
    const part = message.subarray(off, off + fragment)
    out.push(Buffer.concat([u8(22), u16(recordVersion), u16(recordLength ?? part.length), part]))
  }
  return Buffer.concat(out)
}

// ---------------------------------------------------------------------------------------------
// a TLS client that records the relay's bytes on the wire

export interface TlsAttempt {
  /** The client's handshake completed. */
  readonly secure: boolean
  /** Decrypted application bytes the client received. */
  readonly received: Buffer
  /** Every byte the relay sent on the wire. */
  readonly wire: Buffer
  readonly error: string | undefined
}

/**
 * Dial the relay's TLS port through a recording stream, send `probe` once the handshake is done,
 * half-close, and wait for the connection to end. A relay that keeps it open past `timeoutMs` fails.
 * With `verifyServer: false` the client trusts nothing, so it sends its leaf certificate alone.
 */
export const tlsAttempt = (
  port: number,
  creds: { readonly cert: string; readonly key: string; readonly ca: ReadonlyArray<string> },
  probe: Buffer,
  options: { readonly verifyServer?: boolean; readonly timeoutMs?: number } = {}
): Promise<TlsAttempt> =>
  new Promise((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 10_000
    const verifyServer = options.verifyServer ?? true
    // Built first: a certificate OpenSSL cannot load throws here, before any connection is made.
    const secureContext = tls.createSecureContext({
      ...(verifyServer ? { ca: [...creds.ca] } : {}),
      cert: creds.cert,
      key: creds.key,
      minVersion: "TLSv1.2"
    })
    const raw = net.connect({ port, host: "127.0.0.1", noDelay: true })
    const wire: Array<Buffer> = []
    const tap = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        if (raw.destroyed) return callback()
        raw.write(chunk, () => callback())
      },
      final(callback) {
        raw.end()
        callback()
      },
      destroy(error, callback) {
        raw.destroy()
        callback(error)
      }
    })
    raw.on("data", (c: Buffer) => {
      wire.push(c)
      tap.push(c)
    })
    raw.once("end", () => tap.push(null))
    raw.once("close", () => {
      if (!tap.destroyed) tap.push(null)
    })
    raw.on("error", () => {})
    let secure = false
    let error: string | undefined
    const received: Array<Buffer> = []
    const socket = tls.connect({
      socket: tap,
      servername: "127.0.0.1",
      secureContext,
      rejectUnauthorized: verifyServer
    })
    const timer = setTimeout(() => {
      socket.destroy()
      raw.destroy()
      reject(new Error(`the relay kept a TLS connection open ${timeoutMs} ms after the client's EOF`))
    }, timeoutMs)
    socket.once("secureConnect", () => {
      secure = true
      socket.end(probe)
    })
    socket.on("data", (c: Buffer) => received.push(c))
    socket.on("error", (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message))
    socket.once("close", () => {
      const finish = () => {
        clearTimeout(timer)
        resolve({ secure, received: Buffer.concat(received), wire: Buffer.concat(wire), error })
      }
      // Wait for the raw socket too: the relay's last bytes must be on record.
      if (raw.closed) finish()
      else {
        raw.once("close", finish)
        raw.end()
      }
    })
  })

// ---------------------------------------------------------------------------------------------
// DER, for client certificates with arbitrary subjects and extensions

const derLength = (n: number): Buffer => {
  if (n < 0x80) return Buffer.from([n])
  const bytes: Array<number> = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

export const der = {
  tlv: (tag: number, content: Uint8Array): Buffer => Buffer.concat([Buffer.from([tag]), derLength(content.length), content]),
  seq: (...items: ReadonlyArray<Uint8Array>): Buffer => der.tlv(0x30, Buffer.concat(items)),
  set: (...items: ReadonlyArray<Uint8Array>): Buffer => der.tlv(0x31, Buffer.concat(items)),
  oid: (dotted: string): Buffer => der.tlv(0x06, encodeOid(dotted)),
  int: (magnitude: Uint8Array): Buffer =>
    der.tlv(0x02, magnitude[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), magnitude]) : magnitude),
  bool: (v: boolean): Buffer => der.tlv(0x01, Buffer.from([v ? 0xff : 0])),
  octets: (b: Uint8Array): Buffer => der.tlv(0x04, b),
  bits: (b: Uint8Array, unused = 0): Buffer => der.tlv(0x03, Buffer.concat([Buffer.from([unused]), b])),
  explicit: (n: number, content: Uint8Array): Buffer => der.tlv(0xa0 | n, content),
  utcTime: (d: Date): Buffer => {
    const p = (n: number) => String(n).padStart(2, "0")
    const text = `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`
    return der.tlv(0x17, Buffer.from(text, "latin1"))
  }
}

export const OID = {
  CN: "2.5.4.3",
  O: "2.5.4.10",
  OU: "2.5.4.11",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  sha256WithRsa: "1.2.840.113549.1.1.11"
} as const

/** One AttributeTypeAndValue with a value of any tag and content (odd string types included). */
export const nameAttribute = (oid: string, tag: number, content: Uint8Array): Buffer => der.seq(der.oid(oid), der.tlv(tag, content))

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
export const extension = (oid: string, critical: boolean, value: Uint8Array): Buffer =>
  critical ? der.seq(der.oid(oid), der.bool(true), der.octets(value)) : der.seq(der.oid(oid), der.octets(value))

/** The usual relay client leaf extensions: CA:FALSE, key usage (critical), EKU. */
export const leafExtensions = (eku: string = OID.clientAuth): Array<Buffer> => [
  extension(OID.basicConstraints, false, der.seq()),
  // digitalSignature | keyEncipherment | keyAgreement
  extension(OID.keyUsage, true, der.bits(Buffer.from([0xa8]), 3)),
  extension(OID.extKeyUsage, false, der.seq(der.oid(eku)))
]

/**
 * A v3 certificate with exactly the given subject Name DER and extensions, signed (RSA-SHA256) with
 * `issuerKey` under `issuerName` (the issuer's subject DER). PEM.
 */
export const signRawCertificate = (o: {
  readonly subject: Buffer
  readonly extensions: ReadonlyArray<Buffer>
  readonly subjectPublicKeyInfo: Buffer
  readonly issuerName: Buffer
  readonly issuerKey: KeyObject
  readonly serial: Buffer
  /** Applied to the TBSCertificate DER before it is signed. */
  readonly mangleTbs?: (tbs: Buffer) => Buffer
}): string => {
  const algorithm = der.seq(der.oid(OID.sha256WithRsa), Buffer.from([0x05, 0x00]))
  const now = Date.now()
  let tbs = der.seq(
    der.explicit(0, der.int(Buffer.from([2]))),
    der.int(o.serial),
    algorithm,
    o.issuerName,
    der.seq(der.utcTime(new Date(now - 60_000)), der.utcTime(new Date(now + 600_000))),
    o.subject,
    o.subjectPublicKeyInfo,
    ...(o.extensions.length === 0 ? [] : [der.explicit(3, der.seq(...o.extensions))])
  )
  if (o.mangleTbs) tbs = o.mangleTbs(tbs)
  const signature = cryptoSign("sha256", tbs, o.issuerKey)
  const cert = der.seq(tbs, algorithm, der.bits(signature))
  return `-----BEGIN CERTIFICATE-----\n${cert.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END CERTIFICATE-----\n`
}

// ---------------------------------------------------------------------------------------------
// observing the relay subprocess

/** Socket inodes the process holds (from /proc/<pid>/fd). */
const socketInodes = (pid: number): Set<string> => {
  const inodes = new Set<string>()
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) inodes.add(m[1]!)
    } catch {
      // closed while we looked
    }
  }
  return inodes
}

/**
 * TCP connections the process holds whose local port is one of `ports` (its accepted gateway and
 * client connections; the listening sockets themselves are not counted).
 */
export const relayConnections = (pid: number, ports: ReadonlyArray<number>): number => {
  const mine = socketInodes(pid)
  let n = 0
  for (const table of ["tcp", "tcp6"]) {
    let text: string
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${table}`, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10) continue
      const localPort = parseInt(f[1]!.split(":")[1]!, 16)
      const listening = f[3] === "0A"
      if (!listening && ports.includes(localPort) && mine.has(f[9]!)) n++
    }
  }
  return n
}

/** Every open file descriptor of the process. */
export const openFds = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length

/** Resident set size, bytes. */
export const rss = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
  if (!m) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1]) * 1024
}

/** `eventually` (relayHarness.ts) for a check that has to ask the relay (its /metrics). */
export const eventuallyAsync = async (check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The relay's /metrics, summed per metric name and label set: `name{labels}` → value. */
export const scrapeMetrics = async (statusPort: number): Promise<Map<string, number>> => {
  const text = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`)).text()
  const out = new Map<string, number>()
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue
    const m = /^(\S+?)(\{.*\})?\s+(\S+)$/.exec(line)
    if (m) out.set(`${m[1]}${m[2] ?? ""}`, Number(m[3]))
  }
  return out
}

/** Sum of every series of `name` (optionally only those whose labels contain `labelPart`). */
export const metricSum = (metrics: Map<string, number>, name: string, labelPart = ""): number => {
  let total = 0
  for (const [key, value] of metrics) {
    if ((key === name || key.startsWith(`${name}{`)) && key.includes(labelPart)) total += value
  }
  return total
}
