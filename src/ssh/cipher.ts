/**
 * Packet protection (RFC 4253 §6, RFC 4344, RFC 5647 as amended by OpenSSH PROTOCOL, OpenSSH ETM MACs).
 *
 * A `PacketSealer` turns a plaintext payload into the bytes to put on the wire; a `PacketOpener`
 * reads the packet length and then authenticates and decrypts a whole packet. Cipher objects are
 * created once per key and reused across packets (CTR keeps its counter in the cipher); only GCM
 * needs a fresh cipher per packet because its nonce changes.
 *
 * Hot-path notes: the sealer encrypts straight from the transport's scratch buffer, so a payload is
 * copied exactly once (into the scratch buffer); every buffer a sealer returns is freshly allocated
 * and safe to hand to the socket. For aes-ctr with an encrypt-and-MAC MAC we learn the length of an
 * incoming packet by encrypting the current counter block with a separate ECB cipher, so the whole
 * packet is decrypted by one `update` call into one contiguous buffer (no re-assembly copy).
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  randomFillSync,
  timingSafeEqual,
  type Cipher,
  type Decipher
} from "node:crypto"
import { ownedCopy } from "./wire.ts"

export class MacError extends Error {
  override readonly name = "MacError"
}

export interface CipherSpec {
  readonly name: string
  readonly keyLength: number
  readonly ivLength: number
  readonly blockSize: number
  readonly mode: "ctr" | "gcm"
  readonly nodeName: string
}

export interface MacSpec {
  readonly name: string
  readonly keyLength: number
  readonly length: number
  readonly etm: boolean
  readonly hash: "sha256" | "sha512"
}

const CIPHERS: ReadonlyMap<string, CipherSpec> = new Map<string, CipherSpec>(
  [
    ["aes128-ctr", 16, 16, "ctr", "aes-128-ctr"],
    ["aes192-ctr", 24, 16, "ctr", "aes-192-ctr"],
    ["aes256-ctr", 32, 16, "ctr", "aes-256-ctr"],
    ["aes128-gcm@openssh.com", 16, 12, "gcm", "aes-128-gcm"],
    ["aes256-gcm@openssh.com", 32, 12, "gcm", "aes-256-gcm"]
  ].map(([name, keyLength, ivLength, mode, nodeName]) => [
    name as string,
    {
      name: name as string,
      keyLength: keyLength as number,
      ivLength: ivLength as number,
      blockSize: 16,
      mode: mode as "ctr" | "gcm",
      nodeName: nodeName as string
    }
  ])
)

const MACS: ReadonlyMap<string, MacSpec> = new Map<string, MacSpec>([
  ["hmac-sha2-256", { name: "hmac-sha2-256", keyLength: 32, length: 32, etm: false, hash: "sha256" }],
  ["hmac-sha2-512", { name: "hmac-sha2-512", keyLength: 64, length: 64, etm: false, hash: "sha512" }],
  [
    "hmac-sha2-256-etm@openssh.com",
    { name: "hmac-sha2-256-etm@openssh.com", keyLength: 32, length: 32, etm: true, hash: "sha256" }
  ],
  [
    "hmac-sha2-512-etm@openssh.com",
    { name: "hmac-sha2-512-etm@openssh.com", keyLength: 64, length: 64, etm: true, hash: "sha512" }
  ]
])

export const cipherSpec = (name: string): CipherSpec => {
  const c = CIPHERS.get(name)
  if (c === undefined) throw new Error(`unsupported cipher ${name}`)
  return c
}

export const macSpec = (name: string): MacSpec => {
  const m = MACS.get(name)
  if (m === undefined) throw new Error(`unsupported MAC ${name}`)
  return m
}

/** Room a sealer may need after the payload in the scratch buffer (padding). */
export const SEAL_TRAILER = 64
/** Bytes before the payload in the scratch buffer (uint32 packet_length, byte padding_length). */
export const SEAL_HEADER = 5

// Padding bytes come from a random pool refilled in bulk (padding is encrypted anyway).
const paddingPool = Buffer.allocUnsafe(8192)
let paddingPos = paddingPool.length
const fillPadding = (buf: Buffer, offset: number, n: number): void => {
  if (paddingPos + n > paddingPool.length) {
    randomFillSync(paddingPool)
    paddingPos = 0
  }
  paddingPool.copy(buf, offset, paddingPos, paddingPos + n)
  paddingPos += n
}

/**
 * Write packet_length and padding_length in front of a payload at scratch[5..], append padding.
 * `lengthExcluded`: ETM/AEAD modes align padding_length||payload||padding, others the whole packet.
 * Returns the total plaintext packet length (including the 4-byte length field).
 */
const frame = (scratch: Buffer, payloadLength: number, blockSize: number, lengthExcluded: boolean): number => {
  const unpadded = (lengthExcluded ? 1 : 5) + payloadLength
  let padding = blockSize - (unpadded % blockSize)
  if (padding < 4) padding += blockSize
  const packetLength = 1 + payloadLength + padding
  scratch.writeUInt32BE(packetLength, 0)
  scratch[4] = padding
  fillPadding(scratch, SEAL_HEADER + payloadLength, padding)
  return 4 + packetLength
}

const seqBuffer = Buffer.alloc(4)
const seqBytes = (seq: number): Buffer => {
  seqBuffer.writeUInt32BE(seq >>> 0, 0)
  return seqBuffer
}

export interface PacketSealer {
  /**
   * Seal the payload at scratch[5 .. 5+payloadLength] (scratch must have SEAL_TRAILER bytes of room
   * after it). Returns fresh buffers to write, in order.
   */
  seal(seq: number, scratch: Buffer, payloadLength: number): ReadonlyArray<Buffer>
}

export interface PacketOpener {
  /** Bytes needed to learn the packet length. */
  readonly headerLength: number
  readonly macLength: number
  readonly blockSize: number
  /** Whether packet_length itself (ETM/AEAD) or 4 + packet_length must be block-aligned. */
  readonly lengthExcluded: boolean
  /** The packet_length field of the packet at buf[offset]. Called once per packet. */
  packetLength(buf: Buffer, offset: number): number
  /**
   * Authenticate and decrypt the packet at buf[offset] (4 + packetLength + macLength bytes).
   * Returns padding_length || payload || padding (packetLength bytes). Throws MacError.
   */
  open(seq: number, buf: Buffer, offset: number, packetLength: number): Buffer
}

// ---------------------------------------------------------------------------------------------
// none (before the first NEWKEYS)

export class NoneSealer implements PacketSealer {
  seal(_seq: number, scratch: Buffer, payloadLength: number): ReadonlyArray<Buffer> {
    const total = frame(scratch, payloadLength, 8, false)
    return [Buffer.from(scratch.subarray(0, total))]
  }
}

export class NoneOpener implements PacketOpener {
  readonly headerLength = 4
  readonly macLength = 0
  readonly blockSize = 8
  readonly lengthExcluded = false
  packetLength(buf: Buffer, offset: number): number {
    return buf.readUInt32BE(offset)
  }
  open(_seq: number, buf: Buffer, offset: number, packetLength: number): Buffer {
    return buf.subarray(offset + 4, offset + 4 + packetLength)
  }
}

// ---------------------------------------------------------------------------------------------
// aes-ctr with hmac-sha2 (encrypt-and-MAC, or encrypt-then-MAC)

class CtrSealer implements PacketSealer {
  private readonly cipher: Cipher

  constructor(
    spec: CipherSpec,
    key: Buffer,
    iv: Buffer,
    private readonly mac: MacSpec,
    private readonly macKey: Buffer
  ) {
    this.cipher = createCipheriv(spec.nodeName, key, iv)
  }

  seal(seq: number, scratch: Buffer, payloadLength: number): ReadonlyArray<Buffer> {
    if (this.mac.etm) {
      const total = frame(scratch, payloadLength, 16, true)
      const lengthField = Buffer.allocUnsafe(4)
      scratch.copy(lengthField, 0, 0, 4)
      const ciphertext = this.cipher.update(scratch.subarray(4, total))
      const tag = createHmac(this.mac.hash, this.macKey)
        .update(seqBytes(seq))
        .update(lengthField)
        .update(ciphertext)
        .digest()
      return [lengthField, ciphertext, tag]
    }
    const total = frame(scratch, payloadLength, 16, false)
    const plain = scratch.subarray(0, total)
    const tag = createHmac(this.mac.hash, this.macKey).update(seqBytes(seq)).update(plain).digest()
    return [this.cipher.update(plain), tag]
  }
}

/** Add n (< 2^32) to a 16-byte big-endian counter in place. */
const addToCounter = (counter: Buffer, n: number): void => {
  let carry = n
  for (let i = 15; i >= 0 && carry !== 0; i--) {
    const v = counter[i]! + (carry & 0xff)
    counter[i] = v & 0xff
    carry = Math.floor(carry / 256) + (v >> 8)
  }
}

class CtrOpener implements PacketOpener {
  readonly headerLength: number
  readonly macLength: number
  readonly blockSize = 16
  readonly lengthExcluded: boolean
  private readonly decipher: Decipher
  private readonly ecb: Cipher | undefined
  private readonly counter: Buffer

  constructor(
    spec: CipherSpec,
    key: Buffer,
    iv: Buffer,
    private readonly mac: MacSpec,
    private readonly macKey: Buffer
  ) {
    this.decipher = createDecipheriv(spec.nodeName, key, iv)
    this.macLength = mac.length
    this.lengthExcluded = mac.etm
    this.headerLength = mac.etm ? 4 : 16
    this.counter = ownedCopy(iv)
    if (!mac.etm) {
      const ecbName = spec.nodeName.replace(/-ctr$/, "-ecb")
      const ecb = createCipheriv(ecbName, key, null)
      ecb.setAutoPadding(false)
      this.ecb = ecb
    }
  }

  packetLength(buf: Buffer, offset: number): number {
    if (this.ecb === undefined) return buf.readUInt32BE(offset)
    // Keystream for the next block = AES_k(counter); the stream decipher stays untouched.
    const ks = this.ecb.update(this.counter)
    return (
      (((buf[offset]! ^ ks[0]!) << 24) >>> 0) +
      (((buf[offset + 1]! ^ ks[1]!) << 16) | ((buf[offset + 2]! ^ ks[2]!) << 8) | (buf[offset + 3]! ^ ks[3]!))
    )
  }

  open(seq: number, buf: Buffer, offset: number, packetLength: number): Buffer {
    const end = offset + 4 + packetLength
    const received = buf.subarray(end, end + this.macLength)
    if (this.mac.etm) {
      const tag = createHmac(this.mac.hash, this.macKey)
        .update(seqBytes(seq))
        .update(buf.subarray(offset, end))
        .digest()
      if (!timingSafeEqual(tag, received)) throw new MacError("MAC mismatch")
      return this.decipher.update(buf.subarray(offset + 4, end))
    }
    const plain = this.decipher.update(buf.subarray(offset, end))
    addToCounter(this.counter, (4 + packetLength) / 16)
    const tag = createHmac(this.mac.hash, this.macKey).update(seqBytes(seq)).update(plain).digest()
    if (!timingSafeEqual(tag, received)) throw new MacError("MAC mismatch")
    return plain.subarray(4)
  }
}

// ---------------------------------------------------------------------------------------------
// AES-GCM (OpenSSH PROTOCOL §1.6 / RFC 5647 with the length as AAD)

/** Increment the 64-bit invocation counter in the last 8 bytes of a 12-byte GCM nonce. */
const incrementNonce = (iv: Buffer): void => {
  for (let i = 11; i >= 4; i--) {
    iv[i] = (iv[i]! + 1) & 0xff
    if (iv[i] !== 0) break
  }
}

class GcmSealer implements PacketSealer {
  private readonly iv: Buffer

  constructor(
    private readonly spec: CipherSpec,
    private readonly key: Buffer,
    iv: Buffer
  ) {
    this.iv = ownedCopy(iv)
  }

  seal(_seq: number, scratch: Buffer, payloadLength: number): ReadonlyArray<Buffer> {
    const total = frame(scratch, payloadLength, 16, true)
    const lengthField = Buffer.allocUnsafe(4)
    scratch.copy(lengthField, 0, 0, 4)
    const c = createCipheriv(this.spec.nodeName as "aes-128-gcm", this.key, this.iv, { authTagLength: 16 })
    c.setAAD(lengthField)
    const ciphertext = c.update(scratch.subarray(4, total))
    c.final()
    const tag = c.getAuthTag()
    incrementNonce(this.iv)
    return [lengthField, ciphertext, tag]
  }
}

class GcmOpener implements PacketOpener {
  readonly headerLength = 4
  readonly macLength = 16
  readonly blockSize = 16
  readonly lengthExcluded = true
  private readonly iv: Buffer

  constructor(
    private readonly spec: CipherSpec,
    private readonly key: Buffer,
    iv: Buffer
  ) {
    this.iv = ownedCopy(iv)
  }

  packetLength(buf: Buffer, offset: number): number {
    return buf.readUInt32BE(offset)
  }

  open(_seq: number, buf: Buffer, offset: number, packetLength: number): Buffer {
    const end = offset + 4 + packetLength
    const d = createDecipheriv(this.spec.nodeName as "aes-128-gcm", this.key, this.iv, { authTagLength: 16 })
    d.setAAD(buf.subarray(offset, offset + 4))
    d.setAuthTag(buf.subarray(end, end + 16))
    const plain = d.update(buf.subarray(offset + 4, end))
    try {
      d.final()
    } catch {
      throw new MacError("GCM authentication failed")
    }
    incrementNonce(this.iv)
    return plain
  }
}

// ---------------------------------------------------------------------------------------------

export interface DirectionKeys {
  readonly cipher: CipherSpec
  readonly mac: MacSpec | undefined
  readonly key: Buffer
  readonly iv: Buffer
  readonly macKey: Buffer
}

export const createSealer = (k: DirectionKeys): PacketSealer => {
  if (k.cipher.mode === "gcm") return new GcmSealer(k.cipher, k.key, k.iv)
  if (k.mac === undefined) throw new Error(`cipher ${k.cipher.name} needs a MAC`)
  return new CtrSealer(k.cipher, k.key, k.iv, k.mac, k.macKey)
}

export const createOpener = (k: DirectionKeys): PacketOpener => {
  if (k.cipher.mode === "gcm") return new GcmOpener(k.cipher, k.key, k.iv)
  if (k.mac === undefined) throw new Error(`cipher ${k.cipher.name} needs a MAC`)
  return new CtrOpener(k.cipher, k.key, k.iv, k.mac, k.macKey)
}
