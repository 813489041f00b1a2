/**
 * OpenSSH certificates (PROTOCOL.certkeys): parse, verify the CA signature, sign.
 *
 *   string  "ssh-rsa-cert-v01@openssh.com" | "ssh-ed25519-cert-v01@openssh.com"
 *   string  nonce
 *   ...     the key's own fields (rsa: mpint e, mpint n; ed25519: string pk)
 *   uint64  serial          uint32 type          string key id
 *   string  valid principals (a sequence of strings)
 *   uint64  valid after     uint64 valid before
 *   string  critical options / string extensions (sequences of string name, string data)
 *   string  reserved        string signature key (CA public blob)
 *   string  signature       (over every byte before it)
 *
 * Policy (which CA, which principal, validity window) lives in certPolicy.ts.
 */
import { randomBytes } from "node:crypto"
import {
  MAX_RSA_BITS,
  parsePublicKeyBlob,
  sign,
  SshKeyError,
  verify,
  type PublicKeyAlgorithm,
  type SignatureAlgorithm,
  type SshPrivateKey,
  type SshPublicKey
} from "./keys.ts"
import { ownedCopy, SshReader, SshWireError, SshWriter } from "./wire.ts"

export const CERT_TYPE_USER = 1
export const CERT_TYPE_HOST = 2
/** valid_before meaning "forever" (what `ssh-keygen -V always:forever` writes). */
export const CERT_TIME_INFINITY = 0xffff_ffff_ffff_ffffn

export interface SshCertificate {
  readonly type: string
  readonly blob: Buffer
  readonly nonce: Buffer
  readonly publicKey: SshPublicKey
  readonly serial: bigint
  readonly certType: number
  readonly keyId: string
  readonly principals: ReadonlyArray<string>
  readonly validAfter: bigint
  readonly validBefore: bigint
  /** [name, raw data] pairs in wire order; data is itself SSH-encoded (e.g. string("10.0.0.0/8")). */
  readonly criticalOptions: ReadonlyArray<readonly [string, Buffer]>
  readonly extensions: ReadonlyArray<readonly [string, Buffer]>
  readonly signatureKey: Buffer
  readonly signature: Buffer
  readonly signedData: Buffer
}

/** Certificate blob type for each key type. */
const CERT_BLOB_TYPE: Readonly<Record<PublicKeyAlgorithm, string>> = {
  "ssh-rsa": "ssh-rsa-cert-v01@openssh.com",
  "ssh-ed25519": "ssh-ed25519-cert-v01@openssh.com"
}
const KEY_TYPE_OF_CERT: Readonly<Record<string, PublicKeyAlgorithm>> = {
  "ssh-rsa-cert-v01@openssh.com": "ssh-rsa",
  "ssh-ed25519-cert-v01@openssh.com": "ssh-ed25519"
}

const CERT_ALGORITHMS = new Set([
  "ssh-rsa-cert-v01@openssh.com",
  "rsa-sha2-256-cert-v01@openssh.com",
  "rsa-sha2-512-cert-v01@openssh.com",
  "ssh-ed25519-cert-v01@openssh.com"
])

/** True for the publickey/hostkey algorithm names that carry a certificate. */
export const isCertificateAlgorithm = (name: string): boolean => CERT_ALGORITHMS.has(name)

/** Signature algorithms accepted on a certificate (any the CA key supports, incl. SHA-1 ssh-rsa as Go does). */
const CA_SIGNATURE_ALGORITHMS: ReadonlyArray<SignatureAlgorithm> = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-ed25519"]

// Bounds: generous for real certificates, small enough that a hostile blob costs little.
export const MAX_PRINCIPALS = 256 // OpenSSH's SSHKEY_CERT_MAX_PRINCIPALS
export const MAX_PRINCIPAL_BYTES = 1024
const MAX_OPTIONS = 64
const MAX_OPTION_NAME = 256
const MAX_NONCE = 256
const MAX_KEY_ID = 1024
const MAX_SECTION = 64 * 1024
const MAX_NAME = 64

/** Text fields must be valid UTF-8, so no two different byte strings compare equal as strings. */
const utf8 = new TextDecoder("utf-8", { fatal: true })
const text = (b: Uint8Array, what: string): string => {
  try {
    return utf8.decode(b)
  } catch {
    throw new SshWireError(`${what} is not valid UTF-8`)
  }
}

const readPrincipals = (section: Uint8Array): Array<string> => {
  const r = new SshReader(section)
  const out: Array<string> = []
  while (r.remaining > 0) {
    if (out.length === MAX_PRINCIPALS) throw new SshWireError(`more than ${MAX_PRINCIPALS} principals`)
    out.push(text(r.bytes(MAX_PRINCIPAL_BYTES), "principal"))
  }
  return out
}

/** Name/data pairs; order and uniqueness are not enforced (the policy rejects unknown names anyway). */
const readOptions = (section: Uint8Array, what: string): Array<readonly [string, Buffer]> => {
  const r = new SshReader(section)
  const out: Array<readonly [string, Buffer]> = []
  while (r.remaining > 0) {
    if (out.length === MAX_OPTIONS) throw new SshWireError(`more than ${MAX_OPTIONS} ${what}`)
    const name = text(r.bytes(MAX_OPTION_NAME), `${what} name`)
    out.push([name, ownedCopy(r.bytes())])
  }
  return out
}

/** Parse a certificate blob. Does not check the signature (see verifyCertificateSignature). */
export const parseCertificate = (blob: Uint8Array): SshCertificate => {
  const bytes = ownedCopy(blob)
  const r = new SshReader(bytes)
  const type = r.string(MAX_NAME)
  const keyType = Object.hasOwn(KEY_TYPE_OF_CERT, type) ? KEY_TYPE_OF_CERT[type]! : undefined
  if (keyType === undefined) throw new SshKeyError(`unsupported certificate type ${JSON.stringify(type)}`)
  const nonce = ownedCopy(r.bytes(MAX_NONCE))

  // The certified key's fields are exactly a public blob without its leading type string.
  const keyStart = r.offset
  if (keyType === "ssh-rsa") {
    r.mpintBytes(8)
    r.mpintBytes(MAX_RSA_BITS / 8 + 1)
  } else {
    r.bytes(64)
  }
  const keyFields = bytes.subarray(keyStart, r.offset)
  const publicKey = parsePublicKeyBlob(new SshWriter().string(keyType).raw(keyFields).toBuffer())

  const serial = r.uint64()
  const certType = r.uint32()
  if (certType !== CERT_TYPE_USER && certType !== CERT_TYPE_HOST) {
    throw new SshKeyError(`unknown certificate type ${certType}`)
  }
  const keyId = text(r.bytes(MAX_KEY_ID), "key id")
  const principals = readPrincipals(r.bytes(MAX_PRINCIPALS * (MAX_PRINCIPAL_BYTES + 4)))
  const validAfter = r.uint64()
  const validBefore = r.uint64()
  const criticalOptions = readOptions(r.bytes(MAX_SECTION), "critical options")
  const extensions = readOptions(r.bytes(MAX_SECTION), "extensions")
  r.bytes(MAX_SECTION) // reserved: ignored, as PROTOCOL.certkeys says
  const signatureKey = ownedCopy(r.bytes())
  const signedData = bytes.subarray(0, r.offset)
  const signature = ownedCopy(r.bytes())
  r.assertEnd()
  // A CA must be a plain supported key (OpenSSH also refuses certificates as CAs).
  parsePublicKeyBlob(signatureKey)

  return {
    type,
    blob: bytes,
    nonce,
    publicKey,
    serial,
    certType,
    keyId,
    principals,
    validAfter,
    validBefore,
    criticalOptions,
    extensions,
    signatureKey,
    signature,
    signedData
  }
}

/** True when `signature` is a valid signature by `signatureKey` over `signedData`. Never throws. */
export const verifyCertificateSignature = (cert: SshCertificate): boolean => {
  try {
    return verify(parsePublicKeyBlob(cert.signatureKey), cert.signature, cert.signedData, CA_SIGNATURE_ALGORITHMS)
  } catch {
    return false
  }
}

export interface CertificateTemplate {
  certType: number
  keyId: string
  principals: ReadonlyArray<string>
  validAfter: bigint
  validBefore: bigint
  serial?: bigint
  /** [name, data] with data already SSH-encoded (string(value) or empty for flags); sorted by name on output. */
  criticalOptions?: ReadonlyArray<readonly [string, Uint8Array]>
  extensions?: ReadonlyArray<readonly [string, Uint8Array]>
}

/** PROTOCOL.certkeys wants options in lexical order; Go refuses certificates that are not. */
const writeOptions = (w: SshWriter, options: ReadonlyArray<readonly [string, Uint8Array]> | undefined): void => {
  const sorted = [...(options ?? [])].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  const section = new SshWriter()
  for (const [name, data] of sorted) section.string(name).bytes(data)
  w.bytes(section.toBuffer())
}

/**
 * Issue a certificate for `publicKey` signed by `ca`. Default signature algorithm: rsa-sha2-512
 * for RSA CAs (as modern ssh-keygen), ssh-ed25519 for ed25519 CAs. Serial defaults to 0.
 */
export const signCertificate = (
  publicKey: SshPublicKey,
  template: CertificateTemplate,
  ca: SshPrivateKey,
  algorithm?: SignatureAlgorithm
): Buffer => {
  const keyFields = new SshReader(publicKey.blob)
  keyFields.string(MAX_NAME)
  const principals = new SshWriter()
  for (const p of template.principals) principals.string(p)

  const w = new SshWriter(1024)
    .string(CERT_BLOB_TYPE[publicKey.type])
    .bytes(randomBytes(32))
    .raw(keyFields.raw(keyFields.remaining))
    .uint64(template.serial ?? 0n)
    .uint32(template.certType)
    .string(template.keyId)
    .bytes(principals.toBuffer())
    .uint64(template.validAfter)
    .uint64(template.validBefore)
  writeOptions(w, template.criticalOptions)
  writeOptions(w, template.extensions)
  w.string("").bytes(ca.publicBlob)
  const signedData = Buffer.from(w.toBuffer())
  const signature = sign(ca, algorithm ?? (ca.type === "ssh-rsa" ? "rsa-sha2-512" : "ssh-ed25519"), signedData)
  return Buffer.concat([signedData, new SshWriter(signature.length + 4).bytes(signature).toBuffer()])
}
