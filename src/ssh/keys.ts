/**
 * SSH public and private keys (ssh-rsa, ssh-ed25519) and SSH signatures, on Node's OpenSSL.
 *
 * Formats: public-key blobs (RFC 4253 §6.6, RFC 8709), authorized_keys lines, unencrypted
 * OpenSSH private keys (PROTOCOL.key) and signature blobs (RFC 8332 for rsa-sha2-*).
 * Parsers take untrusted bytes: they throw `SshWireError` (framing) or `SshKeyError` (content),
 * never anything else.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as cryptoSign,
  verify as cryptoVerify,
  type JsonWebKey,
  type KeyObject
} from "node:crypto"
import { ownedCopy, SshReader, SshWireError, SshWriter } from "./wire.ts"

/** Thrown for well-framed but unacceptable key material (wrong type, inconsistent numbers, ...). */
export class SshKeyError extends Error {
  override readonly name = "SshKeyError"
}

export type PublicKeyAlgorithm = "ssh-rsa" | "ssh-ed25519"
export type SignatureAlgorithm = "rsa-sha2-256" | "rsa-sha2-512" | "ssh-rsa" | "ssh-ed25519"

export interface SshPublicKey {
  readonly type: PublicKeyAlgorithm
  /** The wire blob, exactly as received (or as we encoded it). */
  readonly blob: Buffer
  readonly key: KeyObject
}

export interface SshPrivateKey {
  readonly type: PublicKeyAlgorithm
  readonly publicBlob: Buffer
  readonly key: KeyObject
}

/** RSA moduli above this are refused: nobody uses them and they make verification slow. */
export const MAX_RSA_BITS = 16384
/** RSA moduli below this never verify (OpenSSH's SSH_RSA_MINIMUM_MODULUS_SIZE). */
export const MIN_RSA_VERIFY_BITS = 1024
/** Public exponents above 2^24 are refused, as Go's x/crypto/ssh does. */
const MAX_RSA_EXPONENT_BITS = 24
const ED25519_PUBLIC_BYTES = 32
const ED25519_SIGNATURE_BYTES = 64
/** Longest key-type / algorithm name we care to read. */
const MAX_NAME = 64

const RSA_SIGNATURE_HASH: Readonly<Record<string, string>> = {
  "rsa-sha2-256": "sha256",
  "rsa-sha2-512": "sha512",
  "ssh-rsa": "sha1"
}

const SIGNATURES_FOR_KEY: Readonly<Record<PublicKeyAlgorithm, ReadonlyArray<SignatureAlgorithm>>> = {
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
  "ssh-ed25519": ["ssh-ed25519"]
}

/** Signature algorithms a key of this type can produce / verify. */
export const signatureAlgorithmsFor = (type: PublicKeyAlgorithm): ReadonlyArray<SignatureAlgorithm> =>
  SIGNATURES_FOR_KEY[type]

// ---------------------------------------------------------------------------------------------
// bigint / base64url helpers (JWK is the one key format Node imports from raw numbers)

/** Big-endian magnitude without leading zeros (empty for 0). */
const stripZeros = (b: Uint8Array): Buffer => {
  let i = 0
  while (i < b.length && b[i] === 0) i++
  return Buffer.from(b.subarray(i))
}

const toBigInt = (b: Uint8Array): bigint => (b.length === 0 ? 0n : BigInt("0x" + Buffer.from(b).toString("hex")))

const fromBigInt = (v: bigint): Buffer => {
  if (v === 0n) return Buffer.alloc(0)
  const hex = v.toString(16)
  return Buffer.from(hex.length % 2 ? "0" + hex : hex, "hex")
}

const b64u = (b: Uint8Array): string => Buffer.from(b).toString("base64url")
const fromB64u = (s: string | undefined): Buffer => {
  if (s === undefined) throw new SshKeyError("JWK is missing a field")
  return Buffer.from(s, "base64url")
}

const bitLength = (v: bigint): number => (v === 0n ? 0 : v.toString(2).length)

/** Read an mpint as an unsigned magnitude, refusing negative values. */
const readUnsignedMpint = (r: SshReader, maxBytes: number): Buffer => {
  const raw = r.mpintBytes(maxBytes)
  if (raw.length > 0 && (raw[0]! & 0x80) !== 0) throw new SshWireError("negative mpint")
  return stripZeros(raw)
}

// ---------------------------------------------------------------------------------------------
// public keys

const rsaPublicKeyObject = (n: Buffer, e: Buffer): KeyObject => {
  const nBits = n.length === 0 ? 0 : bitLength(toBigInt(n))
  if (nBits === 0 || nBits > MAX_RSA_BITS) throw new SshKeyError(`RSA modulus of ${nBits} bits`)
  if ((n[n.length - 1]! & 1) === 0) throw new SshKeyError("RSA modulus is even")
  const ev = toBigInt(e)
  if (ev < 3n || (ev & 1n) === 0n || bitLength(ev) > MAX_RSA_EXPONENT_BITS) {
    throw new SshKeyError("unacceptable RSA public exponent")
  }
  try {
    return createPublicKey({ key: { kty: "RSA", n: b64u(n), e: b64u(e) }, format: "jwk" })
  } catch (cause) {
    throw new SshKeyError(`RSA public key rejected by OpenSSL: ${(cause as Error).message}`)
  }
}

const ed25519PublicKeyObject = (pk: Uint8Array): KeyObject => {
  if (pk.length !== ED25519_PUBLIC_BYTES) throw new SshKeyError(`ed25519 key of ${pk.length} bytes`)
  try {
    return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64u(pk) }, format: "jwk" })
  } catch (cause) {
    throw new SshKeyError(`ed25519 public key rejected by OpenSSL: ${(cause as Error).message}`)
  }
}

/** Max bytes of an RSA modulus mpint (MAX_RSA_BITS plus the sign byte). */
const MAX_RSA_MPINT = MAX_RSA_BITS / 8 + 1

/** Parse an ssh-rsa or ssh-ed25519 public-key blob; anything else (including certificates) is refused. */
export const parsePublicKeyBlob = (blob: Uint8Array): SshPublicKey => {
  const r = new SshReader(blob)
  const type = r.string(MAX_NAME)
  let key: KeyObject
  if (type === "ssh-rsa") {
    const e = readUnsignedMpint(r, 8)
    const n = readUnsignedMpint(r, MAX_RSA_MPINT)
    r.assertEnd()
    key = rsaPublicKeyObject(n, e)
  } else if (type === "ssh-ed25519") {
    const pk = r.bytes(ED25519_PUBLIC_BYTES)
    r.assertEnd()
    key = ed25519PublicKeyObject(pk)
  } else {
    throw new SshKeyError(`unsupported public key type ${JSON.stringify(type)}`)
  }
  return { type, blob: ownedCopy(blob), key }
}

/** The wire blob of a Node public (or private) key object. */
export const publicBlobOf = (key: KeyObject): { type: PublicKeyAlgorithm; blob: Buffer } => {
  const jwk = (key.type === "private" ? createPublicKey(key) : key).export({ format: "jwk" })
  if (jwk.kty === "RSA") {
    const blob = new SshWriter()
      .string("ssh-rsa")
      .mpintFromUnsigned(fromB64u(jwk.e))
      .mpintFromUnsigned(fromB64u(jwk.n))
      .toBuffer()
    return { type: "ssh-rsa", blob: ownedCopy(blob) }
  }
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") {
    return { type: "ssh-ed25519", blob: Buffer.from(new SshWriter().string("ssh-ed25519").bytes(fromB64u(jwk.x)).toBuffer()) }
  }
  throw new SshKeyError(`unsupported key (${key.asymmetricKeyType})`)
}

/** The public half of a private key. */
export const publicKeyOf = (key: SshPrivateKey): SshPublicKey => ({
  type: key.type,
  blob: key.publicBlob,
  key: createPublicKey(key.key)
})

/** OpenSSH-style fingerprint, e.g. "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU". */
export const fingerprintSha256 = (blob: Uint8Array): string =>
  "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")

// ---------------------------------------------------------------------------------------------
// authorized_keys lines

/** Longest line we accept: a 16384-bit RSA certificate is well under this. */
const MAX_LINE = 64 * 1024
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

const decodeBase64Strict = (s: string, what: string): Buffer => {
  if (s.length % 4 !== 0 || !BASE64.test(s)) throw new SshKeyError(`${what} is not valid base64`)
  return Buffer.from(s, "base64")
}

/**
 * Parse `<type> <base64> [comment]` (the first non-blank, non-# line; no option prefix).
 * The blob is not interpreted beyond checking that it starts with `string(type)`, so this also
 * reads certificate lines (`ssh-rsa-cert-v01@openssh.com AAAA... comment`).
 */
export const parseAuthorizedKeyLine = (line: string): { type: string; blob: Buffer; comment: string } => {
  if (line.length > MAX_LINE) throw new SshKeyError("authorized_keys line too long")
  const text = line
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => l.length > 0 && !l.startsWith("#"))
  if (text === undefined) throw new SshKeyError("no key in authorized_keys text")
  const m = /^(\S+)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(text)
  if (m === null) throw new SshKeyError("authorized_keys line is not `<type> <base64> [comment]`")
  const type = m[1]!
  const blob = decodeBase64Strict(m[2]!, "key")
  // OpenSSH refuses a line whose blob disagrees with its type field ("key type mismatch").
  const inner = new SshReader(blob).string(MAX_NAME)
  if (inner !== type) throw new SshKeyError(`key type ${JSON.stringify(inner)} does not match line type ${JSON.stringify(type)}`)
  return { type, blob, comment: (m[3] ?? "").trim() }
}

export const formatAuthorizedKeyLine = (type: string, blob: Uint8Array, comment?: string): string =>
  `${type} ${Buffer.from(blob).toString("base64")}` + (comment ? ` ${comment}` : "")

// ---------------------------------------------------------------------------------------------
// OpenSSH private keys (PROTOCOL.key), unencrypted only

const PEM_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
const PEM_END = "-----END OPENSSH PRIVATE KEY-----"
const AUTH_MAGIC = Buffer.from("openssh-key-v1\0", "latin1")
/** Block size of cipher "none": the private section is padded to a multiple of it. */
const NONE_BLOCK = 8
const MAX_PEM = 64 * 1024

const modInverse = (a: bigint, m: bigint): bigint => {
  let [r0, r1] = [((a % m) + m) % m, m]
  let [s0, s1] = [1n, 0n]
  while (r1 !== 0n) {
    const q = r0 / r1
    ;[r0, r1] = [r1, r0 - q * r1]
    ;[s0, s1] = [s1, s0 - q * s1]
  }
  if (r0 !== 1n) throw new SshKeyError("RSA key numbers are inconsistent (no inverse)")
  return ((s0 % m) + m) % m
}

const gcd = (a: bigint, b: bigint): bigint => {
  while (b !== 0n) [a, b] = [b, a % b]
  return a
}

/** Build the RSA private KeyObject from OpenSSH's (n, e, d, p, q), checking they belong together. */
const rsaPrivateKeyObject = (n: Buffer, e: Buffer, d: Buffer, p: Buffer, q: Buffer): KeyObject => {
  const [N, E, D, P, Q] = [n, e, d, p, q].map(toBigInt) as [bigint, bigint, bigint, bigint, bigint]
  if (P < 3n || Q < 3n || P * Q !== N) throw new SshKeyError("RSA private key: p*q != n")
  if (D < 1n || D >= N) throw new SshKeyError("RSA private key: d out of range")
  // e*d must be 1 modulo lcm(p-1, q-1), else signatures would silently be wrong.
  const lcm = ((P - 1n) * (Q - 1n)) / gcd(P - 1n, Q - 1n)
  if ((E * D) % lcm !== 1n) throw new SshKeyError("RSA private key: d does not match e")
  // iqmp from the file is ignored: recomputing it cannot disagree with p and q.
  const jwk: JsonWebKey = {
    kty: "RSA",
    n: b64u(n),
    e: b64u(e),
    d: b64u(d),
    p: b64u(p),
    q: b64u(q),
    dp: b64u(fromBigInt(D % (P - 1n))),
    dq: b64u(fromBigInt(D % (Q - 1n))),
    qi: b64u(fromBigInt(modInverse(Q, P)))
  }
  try {
    return createPrivateKey({ key: jwk, format: "jwk" })
  } catch (cause) {
    throw new SshKeyError(`RSA private key rejected by OpenSSL: ${(cause as Error).message}`)
  }
}

const ed25519PrivateKeyObject = (pk: Uint8Array, seed: Uint8Array): KeyObject => {
  let key: KeyObject
  try {
    key = createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d: b64u(seed), x: b64u(pk) }, format: "jwk" })
  } catch (cause) {
    throw new SshKeyError(`ed25519 private key rejected by OpenSSL: ${(cause as Error).message}`)
  }
  // Node does not check x against d; a mismatch would make every signature invalid.
  if (!fromB64u(key.export({ format: "jwk" }).x).equals(pk)) {
    throw new SshKeyError("ed25519 private key does not match its public key")
  }
  return key
}

const decodePem = (pem: string): Buffer => {
  if (pem.length > MAX_PEM) throw new SshKeyError("private key file too large")
  const begin = pem.indexOf(PEM_BEGIN)
  const end = pem.indexOf(PEM_END, begin + PEM_BEGIN.length)
  if (begin < 0 || end < 0) throw new SshKeyError("not an OpenSSH private key (missing BEGIN/END OPENSSH PRIVATE KEY)")
  const body = pem.slice(begin + PEM_BEGIN.length, end).replace(/\s+/g, "")
  return decodeBase64Strict(body, "private key body")
}

/** Parse an unencrypted OpenSSH private key (ssh-keygen's default format since 7.8). */
export const parseOpenSshPrivateKey = (pem: string): SshPrivateKey => {
  const data = decodePem(pem)
  if (data.length < AUTH_MAGIC.length || !data.subarray(0, AUTH_MAGIC.length).equals(AUTH_MAGIC)) {
    throw new SshKeyError("bad OpenSSH private key magic")
  }
  const r = new SshReader(data, AUTH_MAGIC.length)
  const cipher = r.string(MAX_NAME)
  const kdf = r.string(MAX_NAME)
  const kdfOptions = r.bytes()
  if (cipher !== "none" || kdf !== "none" || kdfOptions.length !== 0) {
    throw new SshKeyError("encrypted OpenSSH private keys are not supported")
  }
  if (r.uint32() !== 1) throw new SshKeyError("expected exactly one key in the file")
  const publicKey = parsePublicKeyBlob(r.bytes())
  const section = r.bytes()
  r.assertEnd()
  if (section.length % NONE_BLOCK !== 0) throw new SshKeyError("private section is not padded to the block size")

  const s = new SshReader(section)
  // Two equal random ints: the decryption check of PROTOCOL.key (meaningful even unencrypted).
  if (s.uint32() !== s.uint32()) throw new SshKeyError("private key check-ints differ")
  const type = s.string(MAX_NAME)
  if (type !== publicKey.type) throw new SshKeyError(`private key type ${JSON.stringify(type)} does not match public key`)
  let key: KeyObject
  if (type === "ssh-rsa") {
    const n = readUnsignedMpint(s, MAX_RSA_MPINT)
    const e = readUnsignedMpint(s, 8)
    const d = readUnsignedMpint(s, MAX_RSA_MPINT)
    readUnsignedMpint(s, MAX_RSA_MPINT) // iqmp, recomputed
    const p = readUnsignedMpint(s, MAX_RSA_MPINT)
    const q = readUnsignedMpint(s, MAX_RSA_MPINT)
    const expected = new SshWriter().string("ssh-rsa").mpintFromUnsigned(e).mpintFromUnsigned(n).toBuffer()
    if (!parsePublicKeyBlob(expected).key.equals(publicKey.key)) {
      throw new SshKeyError("RSA private key does not match its public key")
    }
    key = rsaPrivateKeyObject(n, e, d, p, q)
  } else {
    const pk = s.bytes(ED25519_PUBLIC_BYTES)
    const sk = s.bytes(64)
    if (sk.length !== 64 || !Buffer.from(sk.subarray(32)).equals(pk)) {
      throw new SshKeyError("malformed ed25519 private key")
    }
    if (!publicKey.blob.equals(new SshWriter().string("ssh-ed25519").bytes(pk).toBuffer())) {
      throw new SshKeyError("ed25519 private key does not match its public key")
    }
    key = ed25519PrivateKeyObject(pk, sk.subarray(0, 32))
  }
  s.string() // comment
  // Padding is 1, 2, 3, ... (PROTOCOL.key); anything else means a corrupt file.
  for (let i = 1; s.remaining > 0; i++) {
    if (s.byte() !== i) throw new SshKeyError("bad private key padding")
  }
  return { type: publicKey.type, publicBlob: publicKey.blob, key }
}

const wrap = (s: string, width: number): string => s.match(new RegExp(`.{1,${width}}`, "g"))?.join("\n") ?? ""

/** Serialize a private key as an unencrypted OpenSSH private key file (what `ssh-keygen -N ""` writes). */
export const encodeOpenSshPrivateKey = (key: SshPrivateKey, comment = ""): string => {
  const jwk = key.key.export({ format: "jwk" })
  const { type, blob } = publicBlobOf(key.key)
  const check = randomBytes(4).readUInt32BE(0)
  const s = new SshWriter().uint32(check).uint32(check).string(type)
  if (jwk.kty === "RSA") {
    for (const f of [jwk.n, jwk.e, jwk.d, jwk.qi, jwk.p, jwk.q]) s.mpintFromUnsigned(fromB64u(f))
  } else {
    const pk = fromB64u(jwk.x)
    s.bytes(pk).bytes(Buffer.concat([fromB64u(jwk.d), pk]))
  }
  s.string(comment)
  for (let i = 1; s.length % NONE_BLOCK !== 0; i++) s.byte(i)

  const file = new SshWriter()
    .raw(AUTH_MAGIC)
    .string("none")
    .string("none")
    .string("")
    .uint32(1)
    .bytes(blob)
    .bytes(s.toBuffer())
    .toBuffer()
  // ssh-keygen wraps at 70 columns.
  return `${PEM_BEGIN}\n${wrap(file.toString("base64"), 70)}\n${PEM_END}\n`
}

export const generateSshKey = (type: PublicKeyAlgorithm, rsaBits = 2048): SshPrivateKey => {
  const { privateKey } =
    type === "ssh-rsa"
      ? generateKeyPairSync("rsa", { modulusLength: rsaBits, publicExponent: 65537 })
      : generateKeyPairSync("ed25519")
  return { type, publicBlob: publicBlobOf(privateKey).blob, key: privateKey }
}

// ---------------------------------------------------------------------------------------------
// signatures

/** Sign `data`, returning the SSH signature blob `string(algorithm) || string(signature)`. */
export const sign = (key: SshPrivateKey, algorithm: SignatureAlgorithm, data: Uint8Array): Buffer => {
  if (!SIGNATURES_FOR_KEY[key.type].includes(algorithm)) {
    throw new SshKeyError(`a ${key.type} key cannot make ${algorithm} signatures`)
  }
  const hash = key.type === "ssh-rsa" ? RSA_SIGNATURE_HASH[algorithm]! : null
  const signature = cryptoSign(hash, data, key.key)
  return Buffer.from(new SshWriter().string(algorithm).bytes(signature).toBuffer())
}

/**
 * Verify an SSH signature blob. `allowed` restricts the algorithms (default: all the key type
 * supports). Returns false for anything malformed; never throws.
 */
export const verify = (
  key: SshPublicKey,
  signatureBlob: Uint8Array,
  data: Uint8Array,
  allowed?: ReadonlyArray<SignatureAlgorithm>
): boolean => {
  try {
    const r = new SshReader(signatureBlob)
    const algorithm = r.string(MAX_NAME) as SignatureAlgorithm
    let signature = r.bytes()
    r.assertEnd()
    if (!SIGNATURES_FOR_KEY[key.type]?.includes(algorithm)) return false
    if (allowed !== undefined && !allowed.includes(algorithm)) return false
    if (key.type === "ssh-ed25519") {
      if (signature.length !== ED25519_SIGNATURE_BYTES) return false
      return cryptoVerify(null, data, key.key, signature)
    }
    const bits = key.key.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < MIN_RSA_VERIFY_BITS) return false
    const size = Math.ceil(bits / 8)
    if (signature.length > size) return false
    // OpenSSH left-pads short RSA signatures (some signers strip leading zeros); OpenSSL will not.
    if (signature.length < size) {
      const padded = Buffer.alloc(size)
      padded.set(signature, size - signature.length)
      signature = padded
    }
    return cryptoVerify(RSA_SIGNATURE_HASH[algorithm]!, data, key.key, signature)
  } catch {
    return false
  }
}

const SIGNATURE_FOR_PUBLIC_KEY_ALGORITHM: Readonly<Record<string, SignatureAlgorithm>> = {
  "ssh-rsa": "ssh-rsa",
  "rsa-sha2-256": "rsa-sha2-256",
  "rsa-sha2-512": "rsa-sha2-512",
  "ssh-ed25519": "ssh-ed25519",
  "ssh-rsa-cert-v01@openssh.com": "ssh-rsa",
  "rsa-sha2-256-cert-v01@openssh.com": "rsa-sha2-256",
  "rsa-sha2-512-cert-v01@openssh.com": "rsa-sha2-512",
  "ssh-ed25519-cert-v01@openssh.com": "ssh-ed25519"
}

/** The signature algorithm a publickey/hostkey algorithm name implies; undefined if unknown. */
export const signatureAlgorithmFor = (publicKeyAlgorithm: string): SignatureAlgorithm | undefined =>
  Object.hasOwn(SIGNATURE_FOR_PUBLIC_KEY_ALGORITHM, publicKeyAlgorithm)
    ? SIGNATURE_FOR_PUBLIC_KEY_ALGORITHM[publicKeyAlgorithm]
    : undefined
