/**
 * Key exchanges (RFC 4253 §8, RFC 8268, RFC 8731), the exchange hash and key derivation (RFC 4253 §7.2).
 *
 * diffie-hellman-group{14,16,18}-sha{256,512} use Node's built-in MODP groups; curve25519-sha256 uses
 * X25519. The shared secret is returned as an unsigned big-endian magnitude; it is always hashed
 * as an mpint.
 */
import {
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  getDiffieHellman,
  type KeyObject
} from "node:crypto"
import {
  KEX_CURVE25519,
  KEX_CURVE25519_LIBSSH,
  KEX_DH14_SHA256,
  KEX_DH16_SHA512,
  KEX_DH18_SHA512
} from "./algorithms.ts"
import { SshWriter } from "./wire.ts"

export class KexError extends Error {
  override readonly name = "KexError"
}

export type KexHash = "sha256" | "sha512"

export interface KexMethod {
  readonly name: string
  readonly hash: KexHash
  /** "dh": public values are mpints; "ecdh": public values are strings */
  readonly kind: "dh" | "ecdh"
  readonly group?: "modp14" | "modp16" | "modp18"
}

const METHODS: ReadonlyMap<string, KexMethod> = new Map<string, KexMethod>([
  [KEX_CURVE25519, { name: KEX_CURVE25519, hash: "sha256", kind: "ecdh" }],
  [KEX_CURVE25519_LIBSSH, { name: KEX_CURVE25519_LIBSSH, hash: "sha256", kind: "ecdh" }],
  [KEX_DH14_SHA256, { name: KEX_DH14_SHA256, hash: "sha256", kind: "dh", group: "modp14" }],
  [KEX_DH16_SHA512, { name: KEX_DH16_SHA512, hash: "sha512", kind: "dh", group: "modp16" }],
  [KEX_DH18_SHA512, { name: KEX_DH18_SHA512, hash: "sha512", kind: "dh", group: "modp18" }]
])

export const kexMethod = (name: string): KexMethod => {
  const m = METHODS.get(name)
  if (m === undefined) throw new KexError(`unsupported key exchange ${name}`)
  return m
}

/** Largest public value we accept (8192-bit group + sign byte). */
export const MAX_KEX_PUBLIC = 1025

const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex")

const stripZeros = (b: Uint8Array): Uint8Array => {
  let i = 0
  while (i < b.length && b[i] === 0) i++
  return b.subarray(i)
}

/** Compare two unsigned big-endian magnitudes (no leading zeros). */
const compareMagnitude = (a: Uint8Array, b: Uint8Array): number => {
  if (a.length !== b.length) return a.length - b.length
  return Buffer.compare(a, b)
}

/** One side's ephemeral key pair for a key exchange. */
export interface KeyAgreement {
  readonly method: KexMethod
  /** Our public value: for DH the unsigned magnitude of e or f, for ECDH the 32-byte point */
  readonly publicValue: Buffer
  /** The shared secret K as an unsigned big-endian magnitude; throws KexError on a bad peer value. */
  computeSecret(peerPublic: Uint8Array): Buffer
}

class DhAgreement implements KeyAgreement {
  readonly publicValue: Buffer
  private readonly dh: ReturnType<typeof getDiffieHellman>
  private readonly pMinus1: Uint8Array

  constructor(readonly method: KexMethod) {
    this.dh = getDiffieHellman(method.group!)
    this.publicValue = this.dh.generateKeys()
    const p = Buffer.from(stripZeros(this.dh.getPrime()))
    p[p.length - 1] = p[p.length - 1]! - 1 // p is odd, so no borrow
    this.pMinus1 = p
  }

  computeSecret(peerPublic: Uint8Array): Buffer {
    // peerPublic is an mpint's bytes; negative values were rejected by the caller's reader.
    const v = stripZeros(peerPublic)
    // RFC 4253 §8: 1 < e < p-1
    if (v.length === 0 || (v.length === 1 && v[0] === 1) || compareMagnitude(v, this.pMinus1) >= 0) {
      throw new KexError("DH public value out of range")
    }
    try {
      return this.dh.computeSecret(Buffer.from(v))
    } catch (e) {
      throw new KexError(`DH computation failed: ${(e as Error).message}`)
    }
  }
}

class X25519Agreement implements KeyAgreement {
  readonly publicValue: Buffer
  private readonly privateKey: KeyObject

  constructor(readonly method: KexMethod) {
    const { privateKey, publicKey } = generateKeyPairSync("x25519")
    this.privateKey = privateKey
    this.publicValue = Buffer.from(publicKey.export({ format: "der", type: "spki" }).subarray(-32))
  }

  computeSecret(peerPublic: Uint8Array): Buffer {
    if (peerPublic.length !== 32) throw new KexError("curve25519 public key must be 32 bytes")
    let secret: Buffer
    try {
      const publicKey = createPublicKey({
        key: Buffer.concat([X25519_SPKI_PREFIX, peerPublic]),
        format: "der",
        type: "spki"
      })
      secret = diffieHellman({ privateKey: this.privateKey, publicKey })
    } catch (e) {
      throw new KexError(`X25519 computation failed: ${(e as Error).message}`)
    }
    // RFC 8731 §3: abort on an all-zero shared secret.
    if (secret.every((b) => b === 0)) throw new KexError("X25519 shared secret is zero")
    return secret
  }
}

export const createKeyAgreement = (method: KexMethod): KeyAgreement =>
  method.kind === "dh" ? new DhAgreement(method) : new X25519Agreement(method)

/** Write a public value as the method's wire type (mpint for DH, string for ECDH). */
export const writePublicValue = (w: SshWriter, method: KexMethod, value: Uint8Array): SshWriter =>
  method.kind === "dh" ? w.mpintFromUnsigned(value) : w.bytes(value)

export interface ExchangeHashInput {
  readonly clientVersion: string
  readonly serverVersion: string
  readonly clientKexInit: Uint8Array
  readonly serverKexInit: Uint8Array
  readonly hostKeyBlob: Uint8Array
  readonly clientPublic: Uint8Array
  readonly serverPublic: Uint8Array
  readonly secret: Uint8Array
}

/** H = HASH(V_C || V_S || I_C || I_S || K_S || e/Q_C || f/Q_S || K) */
export const exchangeHash = (method: KexMethod, x: ExchangeHashInput): Buffer => {
  const w = new SshWriter(2048 + x.hostKeyBlob.length + x.clientPublic.length + x.serverPublic.length)
  w.string(x.clientVersion)
  w.string(x.serverVersion)
  w.bytes(x.clientKexInit)
  w.bytes(x.serverKexInit)
  w.bytes(x.hostKeyBlob)
  writePublicValue(w, method, x.clientPublic)
  writePublicValue(w, method, x.serverPublic)
  w.mpintFromUnsigned(x.secret)
  return createHash(method.hash).update(w.toBuffer()).digest()
}

/** The mpint encoding of K used in key derivation. */
export const encodeSecret = (secret: Uint8Array): Buffer =>
  Buffer.from(new SshWriter(secret.length + 8).mpintFromUnsigned(secret).toBuffer())

/** RFC 4253 §7.2: K1 = HASH(K || H || X || session_id), Kn = HASH(K || H || K1 || ... || Kn-1). */
export const deriveKey = (
  hash: KexHash,
  encodedSecret: Uint8Array,
  exchangeHashValue: Uint8Array,
  sessionId: Uint8Array,
  letter: string,
  length: number
): Buffer => {
  if (length === 0) return Buffer.alloc(0)
  let out = createHash(hash)
    .update(encodedSecret)
    .update(exchangeHashValue)
    .update(letter, "latin1")
    .update(sessionId)
    .digest()
  while (out.length < length) {
    const next = createHash(hash).update(encodedSecret).update(exchangeHashValue).update(out).digest()
    out = Buffer.concat([out, next])
  }
  return out.subarray(0, length)
}
