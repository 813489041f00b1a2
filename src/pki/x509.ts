/**
 * X.509 minting primitives on @peculiar/x509 + Node's WebCrypto, following the conventions of
 * Infisical's backend: RSA (RSASSA-PKCS1-v1_5, SHA-256, e=65537) keys, 20-byte random serials with
 * the top bit cleared, second-precision validity, PEM without a trailing newline, PKCS#8 PEM keys
 * with one.
 *
 * Key generation goes through WebCrypto, which runs on libuv's thread pool: it does not block the
 * event loop, but an RSA-2048 key still costs tens to hundreds of milliseconds, so callers reuse CAs.
 */
// Must be evaluated before @peculiar/x509 (tsyringe needs a Reflect metadata polyfill).
import "./reflect.ts"
import { KeyObject, randomBytes, webcrypto } from "node:crypto"
import { isIP } from "node:net"
import * as x509 from "@peculiar/x509"
import { ANY_POLICY_OID, CA_EXPIRY_YEAR } from "./profile.ts"

// The project compiles without the DOM lib: name Node's WebCrypto types explicitly.
export type CryptoKey = webcrypto.CryptoKey
export type CryptoKeyPair = webcrypto.CryptoKeyPair

const nodeCrypto = webcrypto
x509.cryptoProvider.set(nodeCrypto)

/** @peculiar/x509, loaded after the Reflect polyfill and bound to Node's WebCrypto. Import it from here. */
export { x509 }

/** Options shared by every minting entry point. */
export interface KeyOptions {
  /** RSA modulus length in bits for every key this PKI generates. Default 2048 (Infisical's). */
  readonly modulusLength?: number
  /**
   * Source of key pairs (default: a fresh WebCrypto RSASSA-PKCS1-v1_5/SHA-256 pair every time).
   * Benchmarks can plug in a pool; the pair must use that algorithm.
   */
  readonly generateKeyPair?: (modulusLength: number) => Promise<CryptoKeyPair>
}

export const DEFAULT_MODULUS_LENGTH = 2048

export const rsaAlgorithm = (modulusLength: number): webcrypto.RsaHashedKeyGenParams => ({
  name: "RSASSA-PKCS1-v1_5",
  hash: "SHA-256",
  publicExponent: new Uint8Array([1, 0, 1]),
  modulusLength
})

/** The signing algorithm handed to the generator (the hash is what matters). */
const SIGNING_ALGORITHM: webcrypto.RsaHashedImportParams = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }

export const generateRsaKeyPair = (modulusLength: number = DEFAULT_MODULUS_LENGTH): Promise<CryptoKeyPair> =>
  nodeCrypto.subtle.generateKey(rsaAlgorithm(modulusLength), true, ["sign", "verify"])

export const newKeyPair = (options: KeyOptions | undefined): Promise<CryptoKeyPair> => {
  const bits = options?.modulusLength ?? DEFAULT_MODULUS_LENGTH
  return options?.generateKeyPair ? options.generateKeyPair(bits) : generateRsaKeyPair(bits)
}

/** Serial number as hex: 20 random bytes with the top bit cleared (upstream `createSerialNumber`). */
export const createSerialNumber = (): string => {
  const bytes = randomBytes(20)
  bytes[0] = bytes[0]! & 0x7f
  return bytes.toString("hex")
}

/** Unencrypted PKCS#8 PEM, ending in a newline (what Node's KeyObject export produces). */
export const privateKeyToPem = (key: CryptoKey): string =>
  KeyObject.from(key).export({ format: "pem", type: "pkcs8" }).toString()

/** `-----BEGIN CERTIFICATE-----` … `-----END CERTIFICATE-----`, LF line endings, no trailing newline. */
export const certificateToPem = (cert: x509.X509Certificate): string => cert.toString("pem")

/** Upstream `constructPemChainFromCerts`: PEMs joined by a single `\n`, no trailing newline. */
export const pemChain = (certs: ReadonlyArray<x509.X509Certificate>): string =>
  certs
    .map(certificateToPem)
    .join("\n")
    .trim()

export { splitPemChain } from "./pem.ts"

// ---------------------------------------------------------------------------------------------
// Names

export type NameAttribute = "CN" | "O" | "OU"

/** A distinguished name as RDNs in encoding order, one attribute per RDN. */
export type DistinguishedName = ReadonlyArray<readonly [NameAttribute, string]>

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/

/**
 * Builds the Name the way @peculiar/x509 encodes Infisical's `"O=..,CN=.."` strings (PrintableString
 * when the value allows it, UTF8String otherwise) without going through its string parser, so values
 * containing `,`, `+`, `"` or `\` are taken literally.
 */
export const buildName = (dn: DistinguishedName): x509.Name =>
  new x509.Name(
    dn.map(([type, value]) => ({
      [type]: [PRINTABLE.test(value) ? { printableString: value } : { utf8String: value }]
    }))
  )

// ---------------------------------------------------------------------------------------------
// Validity

/** notBefore = now (no backdating), notAfter = now + seconds. */
export const validityFromNow = (seconds: number, now: Date = new Date()): { notBefore: Date; notAfter: Date } => ({
  notBefore: now,
  notAfter: new Date(now.getTime() + seconds * 1000)
})

/** A CA's validity: creation time to the same date and time in 2045 (UTC calendar). */
export const caValidity = (now: Date = new Date()): { notBefore: Date; notAfter: Date } => {
  const notAfter = new Date(now.getTime())
  notAfter.setUTCFullYear(CA_EXPIRY_YEAR)
  return { notBefore: now, notAfter }
}

// ---------------------------------------------------------------------------------------------
// Extensions (same classes and arguments as upstream, so the DER is the same)

const KU = x509.KeyUsageFlags

export const keyUsage = {
  rootCa: KU.keyCertSign | KU.cRLSign,
  intermediateCa: KU.keyCertSign | KU.cRLSign | KU.digitalSignature | KU.keyEncipherment,
  serverLeaf: KU.digitalSignature | KU.keyEncipherment,
  clientLeaf: KU.digitalSignature | KU.keyEncipherment | KU.keyAgreement
} as const

export const keyUsageExtension = (flags: number): x509.Extension => new x509.KeyUsagesExtension(flags, true)

export const subjectKeyIdentifier = (publicKey: CryptoKey): Promise<x509.Extension> =>
  x509.SubjectKeyIdentifierExtension.create(publicKey, false, nodeCrypto)

/** keyIdentifier only: SHA-1 of the issuer's subjectPublicKey, equal to the issuer's SKI. */
export const authorityKeyIdentifier = (issuer: x509.X509Certificate): Promise<x509.Extension> =>
  x509.AuthorityKeyIdentifierExtension.create(issuer, false, nodeCrypto)

export const caBasicConstraints = (pathLength: number): x509.Extension =>
  new x509.BasicConstraintsExtension(true, pathLength, true)

/** `CA:FALSE`, not critical. */
export const leafBasicConstraints = (): x509.Extension => new x509.BasicConstraintsExtension(false)

export const anyPolicy = (): x509.Extension => new x509.CertificatePolicyExtension([ANY_POLICY_OID])

export const serverAuth = (): x509.Extension =>
  new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], true)

export const clientAuth = (): x509.Extension =>
  new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], true)

/** `IP:<host>` for an IPv4/IPv6 literal, else `DNS:<host>`; exactly one entry, not critical. */
export const hostSubjectAltName = (host: string): x509.Extension =>
  subjectAltNames([{ type: isIP(host) !== 0 ? "ip" : "dns", value: host }])

export const subjectAltNames = (names: ReadonlyArray<x509.JsonGeneralName>): x509.Extension =>
  new x509.SubjectAlternativeNameExtension([...names], false)

/** A non-critical extension whose extnValue octets are the raw UTF-8 JSON (no inner DER). */
export const jsonExtension = (oid: string, value: unknown): x509.Extension =>
  new x509.Extension(oid, false, Buffer.from(JSON.stringify(value), "utf8"))

// ---------------------------------------------------------------------------------------------
// Issuing

/** A certificate together with its private key: a CA, or a leaf before it is exported. */
export interface CertifiedKey {
  readonly certificate: x509.X509Certificate
  /** PEM of `certificate`, no trailing newline. */
  readonly certificatePem: string
  readonly privateKey: CryptoKey
}

export interface IssueParams {
  readonly subject: DistinguishedName
  /** The signing CA; omitted for a self-signed certificate. */
  readonly issuer?: CertifiedKey
  readonly keys: CryptoKeyPair
  readonly notBefore: Date
  readonly notAfter: Date
  readonly extensions: ReadonlyArray<x509.Extension>
}

/** Signs one certificate (sha256WithRSAEncryption, v3, fresh serial). */
export const issueCertificate = async (params: IssueParams): Promise<CertifiedKey> => {
  const subject = buildName(params.subject)
  const certificate = await x509.X509CertificateGenerator.create(
    {
      serialNumber: createSerialNumber(),
      subject,
      // The issuer's subject Name object itself, so issuer and subject bytes are identical.
      issuer: params.issuer ? params.issuer.certificate.subjectName : subject,
      notBefore: params.notBefore,
      notAfter: params.notAfter,
      signingKey: params.issuer ? params.issuer.privateKey : params.keys.privateKey,
      publicKey: params.keys.publicKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions: [...params.extensions]
    },
    nodeCrypto
  )
  return { certificate, certificatePem: certificateToPem(certificate), privateKey: params.keys.privateKey }
}

/** A self-signed root in Infisical's style: KU keyCertSign|cRLSign (critical), SKI, no basicConstraints. */
export const createRootCa = async (subject: DistinguishedName, options?: KeyOptions): Promise<CertifiedKey> => {
  const keys = await newKeyPair(options)
  return issueCertificate({
    subject,
    keys,
    ...caValidity(),
    extensions: [keyUsageExtension(keyUsage.rootCa), await subjectKeyIdentifier(keys.publicKey)]
  })
}

/** An intermediate CA: KU (critical), basicConstraints CA with `pathLength` (critical), AKI, SKI. */
export const createIntermediateCa = async (
  subject: DistinguishedName,
  issuer: CertifiedKey,
  pathLength: number,
  options?: KeyOptions
): Promise<CertifiedKey> => {
  const keys = await newKeyPair(options)
  return issueCertificate({
    subject,
    issuer,
    keys,
    ...caValidity(),
    extensions: [
      keyUsageExtension(keyUsage.intermediateCa),
      caBasicConstraints(pathLength),
      await authorityKeyIdentifier(issuer.certificate),
      await subjectKeyIdentifier(keys.publicKey)
    ]
  })
}

/** Serialisable form of a CA (e.g. to persist the dev control plane's hierarchy). */
export interface ExportedCa {
  /** PEM, no trailing newline. */
  readonly certificate: string
  /** PKCS#8 PEM. */
  readonly privateKey: string
}

export const exportCa = (ca: CertifiedKey): ExportedCa => ({
  certificate: ca.certificatePem,
  privateKey: privateKeyToPem(ca.privateKey)
})

export const importCa = async (exported: ExportedCa): Promise<CertifiedKey> => {
  const certificate = new x509.X509Certificate(exported.certificate)
  const privateKey = await nodeCrypto.subtle.importKey(
    "pkcs8",
    x509.PemConverter.decodeFirst(exported.privateKey),
    SIGNING_ALGORITHM,
    true,
    ["sign"]
  )
  return { certificate, certificatePem: certificateToPem(certificate), privateKey }
}
