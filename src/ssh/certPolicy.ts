/**
 * The relay's user-certificate check for gateways (protocol.md §4.1, checklist 6-13), pure.
 *
 * Order and messages follow the Go relay (validateSSHCertificate + x/crypto CertChecker.CheckCert)
 * so logs read the same; on top of that we require the signing key to be the configured client
 * CA (the Go relay never calls IsUserAuthority) and a non-empty principal list.
 */
import { CERT_TIME_INFINITY, CERT_TYPE_USER, verifyCertificateSignature, type SshCertificate } from "./certs.ts"

export interface GatewayIdentity {
  readonly gatewayId: string
  readonly gatewayName: string
}

export type CertificateVerdict =
  | { readonly ok: true; readonly identity: GatewayIdentity }
  | { readonly ok: false; readonly reason: string }

/** `source-address` is skipped by Go's CertChecker (enforced elsewhere); every other option is refused. */
const SKIPPED_CRITICAL_OPTIONS = new Set(["source-address"])
const INT64_LIMIT = 1n << 63n

const reject = (reason: string): CertificateVerdict => ({ ok: false, reason })
/** Go wraps every CheckCert error this way. */
const checkFailed = (reason: string): CertificateVerdict => reject(`certificate check failed: ssh: ${reason}`)

/** Go's %q of a string / []string, close enough for logs. */
const q = (s: string): string => JSON.stringify(s)

export const checkGatewayCertificate = (input: {
  username: string
  certificate: SshCertificate
  relayName: string
  clientCaPublicKey: Uint8Array
  now: Date
}): CertificateVerdict => {
  const { username, certificate: cert, relayName, clientCaPublicKey, now } = input

  if (cert.certType !== CERT_TYPE_USER) return reject(`invalid certificate type: ${cert.certType}`)

  for (const [name] of cert.criticalOptions) {
    if (!SKIPPED_CRITICAL_OPTIONS.has(name)) return checkFailed(`unsupported critical option ${q(name)} in certificate`)
  }

  if (cert.principals.length > 0 && !cert.principals.includes(username)) {
    return checkFailed(
      `principal ${q(username)} not in the set of valid principals for given certificate: [${cert.principals.map(q).join(" ")}]`
    )
  }

  // Go compares as int64: valid_after >= 2^63 is never valid, valid_before >= 2^63 (other than
  // "forever") has already expired. Same here, so both implementations agree on odd certificates.
  const unixNow = BigInt(Math.floor(now.getTime() / 1000))
  if (cert.validAfter >= INT64_LIMIT || unixNow < cert.validAfter) return checkFailed("cert is not yet valid")
  if (cert.validBefore !== CERT_TIME_INFINITY && (cert.validBefore >= INT64_LIMIT || unixNow >= cert.validBefore)) {
    return checkFailed("cert has expired")
  }

  if (!verifyCertificateSignature(cert)) return checkFailed("certificate signature does not verify")

  // Stricter than Go: only the relay's client CA may sign gateway certificates.
  if (!cert.signatureKey.equals(clientCaPublicKey)) return checkFailed("certificate signed by unrecognized authority")

  // An empty principal list would let the cert log in as any user in OpenSSH terms; we need an id.
  const gatewayId = cert.principals[0] ?? ""
  if (gatewayId === "") return reject("gateway id is required")

  if (cert.keyId !== "client-" + relayName) return reject("certificate Key ID does not match expected value")

  return { ok: true, identity: { gatewayId, gatewayName: cert.principals[1] ?? "" } }
}
