/**
 * User authentication (RFC 4252, RFC 8332, OpenSSH PROTOCOL.certkeys).
 *
 * Server side: publickey with OpenSSH user certificates only. `none`, password,
 * keyboard-interactive and everything else get USERAUTH_FAILURE listing only `publickey`; raw keys
 * are refused. A query (no signature) gets PK_OK exactly when the signed request would be accepted
 * by the policy; a signed request is verified with the certified key. After `maxAuthTries` counted
 * failures (an initial `none` is free) the client is disconnected.
 *
 * Client side (our demo gateway and tests): `none` first, then a signed publickey request with a
 * certificate (rsa-sha2-256-cert when the server's server-sig-algs lists rsa-sha2-256).
 */
import {
  certificateBlobType,
  CERT_ED25519,
  CERT_RSA,
  CERT_RSA_SHA256,
  CERT_RSA_SHA512
} from "./algorithms.ts"
import { isCertificateAlgorithm, parseCertificate, verifyCertificateSignature, type SshCertificate } from "./certs.ts"
import { DISCONNECT, MSG } from "./constants.ts"
import { sign, signatureAlgorithmFor, verify, type SshPrivateKey } from "./keys.ts"
import { SshProtocolError, type Transport } from "./transport.ts"
import { SshReader, SshWriter } from "./wire.ts"

export interface AuthContext {
  readonly username: string
  readonly certificate: SshCertificate
  /** the publickey algorithm the client used, e.g. rsa-sha2-256-cert-v01@openssh.com */
  readonly publicKeyAlgorithm: string
  /** same as publicKeyAlgorithm */
  readonly algorithm: string
}

export type AuthDecision = { readonly ok: true } | { readonly ok: false; readonly reason: string }

export interface Authenticated<D> {
  readonly username: string
  readonly certificate: SshCertificate
  readonly publicKeyAlgorithm: string
  /** what the authenticate callback returned */
  readonly decision: D
}

/** One line per authentication attempt, for logs. */
export interface AuthAttempt {
  readonly username: string
  readonly method: string
  readonly publicKeyAlgorithm?: string
  readonly outcome: "success" | "pk_ok" | "failure"
  readonly reason?: string
}

export interface ServerAuthOptions<D extends AuthDecision> {
  readonly authenticate: (context: AuthContext) => D
  readonly maxAuthTries: number
  readonly onSuccess: (result: Authenticated<Extract<D, { ok: true }>>) => void
  readonly onAttempt?: (attempt: AuthAttempt) => void
}

const USERAUTH_SERVICE = "ssh-userauth"
const CONNECTION_SERVICE = "ssh-connection"
const MAX_USERNAME = 1024
const MAX_KEY_BLOB = 16 * 1024
/** USERAUTH_REQUESTs of any outcome per connection (PK_OK answers are not failures, but cost CPU). */
const MAX_AUTH_REQUESTS = 20

/** The bytes a publickey signature covers (RFC 4252 §7). */
export const publicKeySignedData = (
  sessionId: Uint8Array,
  username: string,
  service: string,
  algorithm: string,
  blob: Uint8Array
): Buffer =>
  Buffer.from(
    new SshWriter(sessionId.length + username.length + blob.length + 128)
      .bytes(sessionId)
      .byte(MSG.USERAUTH_REQUEST)
      .string(username)
      .string(service)
      .string("publickey")
      .boolean(true)
      .string(algorithm)
      .bytes(blob)
      .toBuffer()
  )

const FAILURE_PUBLICKEY = Buffer.from(
  new SshWriter(32).byte(MSG.USERAUTH_FAILURE).nameList(["publickey"]).boolean(false).toBuffer()
)

type Evaluation<D> =
  | { readonly ok: true; readonly certificate: SshCertificate; readonly decision: D }
  | { readonly ok: false; readonly reason: string }

export class ServerAuth<D extends AuthDecision> {
  private serviceAccepted = false
  private attempts = 0
  private failures = 0
  authenticated = false

  constructor(
    private readonly transport: Transport,
    private readonly options: ServerAuthOptions<D>
  ) {}

  /** Handle a message received before authentication succeeded. */
  handle(payload: Buffer): void {
    const type = payload[0]!
    const r = new SshReader(payload, 1)
    if (type === MSG.SERVICE_REQUEST) {
      const service = r.string(256)
      if (service !== USERAUTH_SERVICE || this.serviceAccepted) {
        throw new SshProtocolError(`service not available: ${service.slice(0, 64)}`, DISCONNECT.SERVICE_NOT_AVAILABLE)
      }
      this.serviceAccepted = true
      this.transport.send(Buffer.from(new SshWriter(32).byte(MSG.SERVICE_ACCEPT).string(USERAUTH_SERVICE).toBuffer()))
      return
    }
    if (type !== MSG.USERAUTH_REQUEST || !this.serviceAccepted) {
      throw new SshProtocolError(`unexpected message ${type} before authentication`)
    }
    const username = r.string(MAX_USERNAME)
    const service = r.string(256)
    const method = r.string(256)
    if (service !== CONNECTION_SERVICE) {
      throw new SshProtocolError(`service not available: ${service.slice(0, 64)}`, DISCONNECT.SERVICE_NOT_AVAILABLE)
    }
    if (++this.attempts > MAX_AUTH_REQUESTS) {
      throw new SshProtocolError("too many authentication requests", DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE)
    }
    if (method !== "publickey") {
      this.attempt({ username, method, outcome: "failure", reason: "only publickey authentication is allowed" })
      this.fail(!(method === "none" && this.attempts === 1))
      return
    }
    const signed = r.boolean()
    const algorithm = r.string(256)
    const blob = r.bytes(MAX_KEY_BLOB)
    const signature = signed ? r.bytes(MAX_KEY_BLOB) : undefined
    const evaluation = this.evaluate(username, algorithm, blob)
    if (!evaluation.ok) {
      this.attempt({ username, method, publicKeyAlgorithm: algorithm, outcome: "failure", reason: evaluation.reason })
      this.fail(true)
      return
    }
    if (signature === undefined) {
      this.attempt({ username, method, publicKeyAlgorithm: algorithm, outcome: "pk_ok" })
      this.transport.send(
        Buffer.from(new SshWriter(blob.length + 64).byte(MSG.USERAUTH_PK_OK).string(algorithm).bytes(blob).toBuffer())
      )
      return
    }
    const signatureAlgorithm = signatureAlgorithmFor(algorithm)
    const data = publicKeySignedData(this.transport.sessionId!, username, service, algorithm, blob)
    if (
      signatureAlgorithm === undefined ||
      !verify(evaluation.certificate.publicKey, signature, data, [signatureAlgorithm])
    ) {
      this.attempt({ username, method, publicKeyAlgorithm: algorithm, outcome: "failure", reason: "bad signature" })
      this.fail(true)
      return
    }
    this.attempt({ username, method, publicKeyAlgorithm: algorithm, outcome: "success" })
    this.authenticated = true
    this.transport.send(Buffer.from([MSG.USERAUTH_SUCCESS]))
    this.options.onSuccess({
      username,
      certificate: evaluation.certificate,
      publicKeyAlgorithm: algorithm,
      decision: evaluation.decision as Extract<D, { ok: true }>
    })
  }

  private attempt(a: AuthAttempt): void {
    try {
      this.options.onAttempt?.(a)
    } catch {
      // logging must not break authentication
    }
  }

  private fail(counted: boolean): void {
    if (counted) {
      this.failures++
      if (this.failures >= this.options.maxAuthTries) {
        throw new SshProtocolError("too many authentication failures", DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE)
      }
    }
    this.transport.send(FAILURE_PUBLICKEY)
  }

  private evaluate(username: string, algorithm: string, blob: Uint8Array): Evaluation<D> {
    if (!isCertificateAlgorithm(algorithm)) {
      return { ok: false, reason: "certificates required, raw public keys not allowed" }
    }
    let certificate: SshCertificate
    try {
      certificate = parseCertificate(blob)
    } catch (e) {
      return { ok: false, reason: `malformed certificate: ${(e as Error).message}` }
    }
    if (certificateBlobType(algorithm) !== certificate.type) {
      return { ok: false, reason: `algorithm ${algorithm} does not match certificate type ${certificate.type}` }
    }
    if (!verifyCertificateSignature(certificate)) {
      return { ok: false, reason: "certificate signature does not verify" }
    }
    let decision: D
    try {
      decision = this.options.authenticate({ username, certificate, publicKeyAlgorithm: algorithm, algorithm })
    } catch (e) {
      return { ok: false, reason: `authentication policy failed: ${(e as Error).message}` }
    }
    if (!decision.ok) return { ok: false, reason: decision.reason }
    return { ok: true, certificate, decision }
  }
}

// ---------------------------------------------------------------------------------------------
// client side

export class AuthenticationError extends Error {
  override readonly name = "AuthenticationError"
}

export interface ClientAuthOptions {
  readonly username: string
  /** certificate blob (or, for tests, a raw public key blob) */
  readonly certificate: Buffer
  readonly privateKey: SshPrivateKey
  /** force a publickey algorithm (tests); default: chosen from server-sig-algs */
  readonly publicKeyAlgorithm?: string
  readonly onSuccess: () => void
  readonly onFailure: (error: Error) => void
}

/** Pick the publickey algorithm for a blob type, as Go's x/crypto client does. */
export const choosePublicKeyAlgorithm = (
  blobType: string,
  serverSigAlgs: ReadonlyArray<string> | undefined
): string => {
  const has = (a: string): boolean => serverSigAlgs?.includes(a) ?? false
  switch (blobType) {
    case CERT_RSA:
      if (has("rsa-sha2-256")) return CERT_RSA_SHA256
      if (has("rsa-sha2-512")) return CERT_RSA_SHA512
      return CERT_RSA
    case "ssh-rsa":
      if (has("rsa-sha2-256")) return "rsa-sha2-256"
      if (has("rsa-sha2-512")) return "rsa-sha2-512"
      return "ssh-rsa"
    case CERT_ED25519:
    case "ssh-ed25519":
      return blobType
    default:
      throw new AuthenticationError(`unsupported key type ${blobType}`)
  }
}

export class ClientAuth {
  private state: "service" | "none" | "publickey" | "done" = "service"

  constructor(
    private readonly transport: Transport,
    private readonly options: ClientAuthOptions
  ) {}

  start(): void {
    this.transport.send(Buffer.from(new SshWriter(32).byte(MSG.SERVICE_REQUEST).string(USERAUTH_SERVICE).toBuffer()))
  }

  handle(payload: Buffer): void {
    const type = payload[0]!
    const r = new SshReader(payload, 1)
    switch (type) {
      case MSG.SERVICE_ACCEPT: {
        if (this.state !== "service") throw new SshProtocolError("unexpected SERVICE_ACCEPT")
        this.state = "none"
        this.transport.send(
          Buffer.from(
            new SshWriter(64 + this.options.username.length)
              .byte(MSG.USERAUTH_REQUEST)
              .string(this.options.username)
              .string(CONNECTION_SERVICE)
              .string("none")
              .toBuffer()
          )
        )
        return
      }
      case MSG.USERAUTH_BANNER:
      case MSG.USERAUTH_PK_OK:
        return
      case MSG.USERAUTH_SUCCESS:
        if (this.state === "service" || this.state === "done") throw new SshProtocolError("unexpected USERAUTH_SUCCESS")
        this.state = "done"
        this.options.onSuccess()
        return
      case MSG.USERAUTH_FAILURE: {
        const methods = r.nameList()
        if (this.state === "none" && methods.includes("publickey")) {
          this.state = "publickey"
          this.sendPublicKey()
          return
        }
        this.state = "done"
        this.options.onFailure(new AuthenticationError(`authentication failed (server allows: ${methods.join(",")})`))
        this.transport.disconnect(DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE, "no more authentication methods")
        return
      }
    }
    throw new SshProtocolError(`unexpected message ${type} during authentication`)
  }

  private sendPublicKey(): void {
    const blob = this.options.certificate
    const blobType = new SshReader(blob).string(256)
    const algorithm = this.options.publicKeyAlgorithm ?? choosePublicKeyAlgorithm(blobType, this.transport.serverSigAlgs)
    const signatureAlgorithm = signatureAlgorithmFor(algorithm)
    if (signatureAlgorithm === undefined) throw new AuthenticationError(`unsupported algorithm ${algorithm}`)
    const username = this.options.username
    const data = publicKeySignedData(this.transport.sessionId!, username, CONNECTION_SERVICE, algorithm, blob)
    const signature = sign(this.options.privateKey, signatureAlgorithm, data)
    this.transport.send(
      Buffer.from(
        new SshWriter(blob.length + signature.length + 128)
          .byte(MSG.USERAUTH_REQUEST)
          .string(username)
          .string(CONNECTION_SERVICE)
          .string("publickey")
          .boolean(true)
          .string(algorithm)
          .bytes(blob)
          .bytes(signature)
          .toBuffer()
      )
    )
  }
}
