/**
 * What the relay's TLS listener needs from a verified client certificate (protocol.md §4.2):
 *
 * - the subject CN: the gateway id to route to (the zero UUID marks a heartbeat probe);
 * - the first subject O: the org label, for logs;
 * - extension 1.3.6.1.4.1.12345.100.3, whose extnValue octets are raw UTF-8 JSON
 *   `{"name":"<gatewayName>"}`: absent, valid, or invalid (the relay then closes the connection).
 *
 * Runs once per connection on the peer's leaf DER (`socket.getPeerX509Certificate().raw`). It walks
 * the fixed certificate structure with the bounded reader in der.ts: no recursion, every length
 * checked, linear in the input, and the only exception it throws is `ClientIdentityError`.
 *
 * Compared with Go's crypto/x509 + encoding/json as used by the reference relay:
 * - CN: the last CN attribute wins (pkix.Name.FillFromRDNSequence overwrites); O: the first one.
 * - CN/O values are decoded from the string types Go accepts (UTF8String, PrintableString,
 *   IA5String, NumericString, TeletexString as Latin-1, BMPString); a malformed value, invalid
 *   UTF-8 or another type is an error (Go fails the whole handshake on those).
 * - The JSON is decoded with invalid UTF-8 replaced by U+FFFD, as Go does. It must be an object
 *   with a string `name` (stricter than Go, which accepts `null`, `{}` or `{"NAME":..}` as an empty
 *   or case-folded name); a duplicated extension is invalid (Go rejects such certificates).
 */
import { Either } from "effect"
import { contextTag, DerCursor, DerError, encodeOid, Tag } from "./der.ts"
import { RELAY_CONNECTING_GATEWAY_INFO_OID, ZERO_UUID } from "./profile.ts"

/** Malformed certificate DER or an undecodable CN/O value. The relay closes the connection. */
export class ClientIdentityError extends Error {
  readonly _tag = "ClientIdentityError"
  override readonly name = "ClientIdentityError"
}

export type GatewayNameField =
  | { readonly _tag: "Absent" }
  | { readonly _tag: "Valid"; readonly name: string }
  | { readonly _tag: "Invalid"; readonly reason: string }

export interface ClientIdentity {
  /** Subject CN; `undefined` when the subject has none (Go's `""`). */
  readonly gatewayId: string | undefined
  /** First subject O value; `undefined` when there is none. */
  readonly orgLabel: string | undefined
  /** Extension 1.3.6.1.4.1.12345.100.3. */
  readonly gatewayName: GatewayNameField
}

export const isHeartbeatProbe = (identity: ClientIdentity): boolean => identity.gatewayId === ZERO_UUID

const OID_CN = encodeOid("2.5.4.3")
const OID_O = encodeOid("2.5.4.10")
const OID_GATEWAY_INFO = encodeOid(RELAY_CONNECTING_GATEWAY_INFO_OID)

const ABSENT: GatewayNameField = { _tag: "Absent" }

const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const bufferView = (buf: Uint8Array, start: number, end: number): Buffer =>
  Buffer.from(buf.buffer, buf.byteOffset + start, end - start)

const isAscii = (buf: Uint8Array, start: number, end: number): boolean => {
  for (let i = start; i < end; i++) if (buf[i]! >= 0x80) return false
  return true
}

/** Decodes an X.520 DirectoryString-ish value as Go's parseASN1String does. */
const decodeString = (buf: Uint8Array, tag: number, start: number, end: number): string => {
  switch (tag) {
    case Tag.UTF8_STRING:
      try {
        return utf8Strict.decode(buf.subarray(start, end))
      } catch {
        throw new ClientIdentityError("invalid UTF-8 in a subject attribute")
      }
    case Tag.PRINTABLE_STRING:
    case Tag.IA5_STRING:
    case Tag.NUMERIC_STRING:
      if (!isAscii(buf, start, end)) throw new ClientIdentityError("non-ASCII byte in an ASCII string type")
      return bufferView(buf, start, end).toString("latin1")
    case Tag.TELETEX_STRING:
      return bufferView(buf, start, end).toString("latin1")
    case Tag.BMP_STRING: {
      if ((end - start) % 2 !== 0) throw new ClientIdentityError("odd-length BMPString")
      let s = ""
      for (let i = start; i < end; i += 2) s += String.fromCharCode((buf[i]! << 8) | buf[i + 1]!)
      return s
    }
    default:
      throw new ClientIdentityError(`unsupported string type 0x${tag.toString(16)} in a subject attribute`)
  }
}

const parseGatewayName = (buf: Uint8Array, start: number, end: number): GatewayNameField => {
  // Non-fatal decode: invalid sequences become U+FFFD, like Go's encoding/json.
  const text = bufferView(buf, start, end).toString("utf8")
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { _tag: "Invalid", reason: "not JSON" }
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { _tag: "Invalid", reason: "not a JSON object" }
  }
  const name: unknown = Object.hasOwn(value, "name") ? (value as { name: unknown }).name : undefined
  if (typeof name !== "string") return { _tag: "Invalid", reason: "name is not a string" }
  return { _tag: "Valid", name }
}

const walk = (der: Uint8Array): ClientIdentity => {
  // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
  const top = DerCursor.over(der)
  top.expect(Tag.SEQUENCE, "Certificate")
  if (top.hasMore()) throw new DerError("trailing data after the certificate")
  const cert = top.enter()
  cert.expect(Tag.SEQUENCE, "tbsCertificate")
  const tbs = cert.enter()
  cert.expect(Tag.SEQUENCE, "signatureAlgorithm")
  cert.expect(Tag.BIT_STRING, "signatureValue")
  if (cert.hasMore()) throw new DerError("trailing data in Certificate")

  // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity,
  //   subject, subjectPublicKeyInfo, [1] issuerUniqueID OPTIONAL, [2] subjectUniqueID OPTIONAL,
  //   [3] extensions OPTIONAL }
  if (!tbs.hasMore()) throw new DerError("empty tbsCertificate")
  tbs.next()
  if (tbs.tag === contextTag(0)) tbs.next()
  if (tbs.tag !== Tag.INTEGER) throw new DerError("serialNumber: expected INTEGER")
  tbs.expect(Tag.SEQUENCE, "signature")
  tbs.expect(Tag.SEQUENCE, "issuer")
  tbs.expect(Tag.SEQUENCE, "validity")
  tbs.expect(Tag.SEQUENCE, "subject")
  const subject = tbs.enter()
  tbs.expect(Tag.SEQUENCE, "subjectPublicKeyInfo")

  // Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue)
  let cnTag = -1
  let cnStart = 0
  let cnEnd = 0
  let oTag = -1
  let oStart = 0
  let oEnd = 0
  while (subject.hasMore()) {
    subject.expect(Tag.SET, "RelativeDistinguishedName")
    const rdn = subject.enter()
    while (rdn.hasMore()) {
      rdn.expect(Tag.SEQUENCE, "AttributeTypeAndValue")
      const atv = rdn.enter()
      atv.expect(Tag.OID, "attribute type")
      const isCn = atv.contentEquals(OID_CN)
      const isO = !isCn && oTag < 0 && atv.contentEquals(OID_O)
      if (!atv.hasMore()) throw new DerError("attribute without a value")
      atv.next()
      if (atv.hasMore()) throw new DerError("trailing data in AttributeTypeAndValue")
      if (isCn) {
        cnTag = atv.tag
        cnStart = atv.start
        cnEnd = atv.end
      } else if (isO) {
        oTag = atv.tag
        oStart = atv.start
        oEnd = atv.end
      }
    }
  }

  let gatewayName: GatewayNameField = ABSENT
  let extensionsSeen = false
  while (tbs.hasMore()) {
    tbs.next()
    const tag: number = tbs.tag
    if (extensionsSeen) throw new DerError("data after extensions")
    // [1]/[2] unique identifiers (IMPLICIT BIT STRING; constructed form tolerated): skipped.
    if (tag === 0x81 || tag === 0x82 || tag === 0xa1 || tag === 0xa2) continue
    if (tag !== contextTag(3)) throw new DerError(`unexpected element 0x${tag.toString(16)} in tbsCertificate`)
    extensionsSeen = true
    const explicit = tbs.enter()
    explicit.expect(Tag.SEQUENCE, "Extensions")
    if (explicit.hasMore()) throw new DerError("trailing data after Extensions")
    const list = explicit.enter()
    let found = 0
    while (list.hasMore()) {
      // Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
      list.expect(Tag.SEQUENCE, "Extension")
      const ext = list.enter()
      ext.expect(Tag.OID, "extnID")
      const matches = ext.contentEquals(OID_GATEWAY_INFO)
      if (!ext.hasMore()) throw new DerError("Extension without extnValue")
      ext.next()
      if (ext.tag === Tag.BOOLEAN) {
        if (ext.end - ext.start !== 1) throw new DerError("bad BOOLEAN")
        if (!ext.hasMore()) throw new DerError("Extension without extnValue")
        ext.next()
      }
      if (ext.tag !== Tag.OCTET_STRING) throw new DerError("extnValue: expected OCTET STRING")
      if (ext.hasMore()) throw new DerError("trailing data in Extension")
      if (matches) {
        found++
        gatewayName =
          found === 1 ? parseGatewayName(der, ext.start, ext.end) : { _tag: "Invalid", reason: "duplicate extension" }
      }
    }
  }

  return {
    gatewayId: cnTag < 0 ? undefined : decodeString(der, cnTag, cnStart, cnEnd),
    orgLabel: oTag < 0 ? undefined : decodeString(der, oTag, oStart, oEnd),
    gatewayName
  }
}

/**
 * Reads the relay-relevant identity from a leaf certificate's DER.
 * @throws ClientIdentityError on malformed DER or an undecodable CN/O value (and nothing else).
 */
export const parseClientIdentity = (der: Uint8Array): ClientIdentity => {
  try {
    return walk(der)
  } catch (e) {
    if (e instanceof DerError) throw new ClientIdentityError(`malformed certificate: ${e.message}`)
    throw e
  }
}

/** `parseClientIdentity` without the throw. */
export const parseClientIdentityEither = (der: Uint8Array): Either.Either<ClientIdentity, ClientIdentityError> => {
  try {
    return Either.right(walk(der))
  } catch (e) {
    if (e instanceof DerError) return Either.left(new ClientIdentityError(`malformed certificate: ${e.message}`))
    if (e instanceof ClientIdentityError) return Either.left(e)
    throw e
  }
}
