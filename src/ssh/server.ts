/**
 * The relay's SSH server entry point: one accepted socket -> one SSH connection.
 *
 *   const conn = acceptSshConnection(socket, { hostKey, authenticate, limits, keepalive })
 *   await conn.authenticated            // { username, certificate, publicKeyAlgorithm, decision }
 *   const ch = await conn.openDirectTcpip()   // direct-tcpip with empty type-specific data
 *
 * The server presents only its OpenSSH host certificate, accepts only user certificates, rejects
 * every channel the client opens and answers every global request with REQUEST_FAILURE.
 */
import type { KeyObject } from "node:crypto"
import type { Duplex } from "node:stream"
import { hostKeyAlgorithmsForCertificate, type AlgorithmPreferences } from "./algorithms.ts"
import { parseCertificate, type SshCertificate } from "./certs.ts"
import type { SshChannel } from "./channel.ts"
import { Connection, type ChannelLimits, type ChannelOpenPolicy, type KeepaliveOptions } from "./connection.ts"
import { DISCONNECT, OPEN_FAILURE } from "./constants.ts"
import { parseAuthorizedKeyLine, sign, signatureAlgorithmFor, type SshPrivateKey } from "./keys.ts"
import {
  SshProtocolError,
  Transport,
  type CloseInfo,
  type ConnectionInfo,
  type HostKeySigner
} from "./transport.ts"
import { ServerAuth, type AuthAttempt, type AuthContext, type AuthDecision, type Authenticated } from "./userauth.ts"

export type { AuthAttempt, AuthContext, AuthDecision, Authenticated } from "./userauth.ts"
export type { CloseInfo, ConnectionInfo } from "./transport.ts"
export { ChannelLimitError, ChannelOpenError, ConnectionClosedError } from "./connection.ts"
export { SshChannel } from "./channel.ts"

export interface HostKeyConfig {
  /** the OpenSSH host certificate: blob, or authorized_keys-style line */
  readonly certificate: Buffer | string
  /** its private key */
  readonly privateKey: SshPrivateKey | KeyObject
}

export interface ServerLimits extends ChannelLimits {
  /** largest packet_length accepted from the client (default 256 KiB + 1 KiB) */
  readonly maxPacket?: number
  /**
   * drop the connection when not authenticated this long after accept (default 30 s): the whole
   * pre-auth phase (version exchange, key exchange, userauth) is bounded, whatever the peer sends
   */
  readonly authTimeoutMs?: number
  /** counted authentication failures before disconnect (default 3) */
  readonly maxAuthTries?: number
  /** rekey after this many bytes in either direction (default 1 GiB) */
  readonly rekeyBytes?: number
}

export interface ServerOptions<D extends AuthDecision> {
  readonly hostKey: HostKeyConfig
  /** sync, pure policy; called for the PK_OK query and for the signed request */
  readonly authenticate: (context: AuthContext) => D
  readonly limits?: ServerLimits
  readonly keepalive?: KeepaliveOptions
  /** restrict algorithm lists (tests) */
  readonly algorithms?: AlgorithmPreferences
  /** identification string, default "SSH-2.0-InfisicalRelay_1.0" */
  readonly version?: string
  /** advertise strict KEX (default true) */
  readonly strictKex?: boolean
  /** called for each authentication attempt (logging) */
  readonly onAuthAttempt?: (attempt: AuthAttempt) => void
}

export interface SshServerConnection<D extends AuthDecision> {
  /** resolves after USERAUTH_SUCCESS; rejects when the connection ends first */
  readonly authenticated: Promise<Authenticated<Extract<D, { ok: true }>>>
  /** resolves once, when the connection has ended (never rejects) */
  readonly closed: Promise<CloseInfo>
  /** negotiated algorithms and the peer's identification */
  readonly info: ConnectionInfo
  readonly isClosed: boolean
  /** number of channels open or being opened */
  readonly channelCount: number
  /** open a `direct-tcpip` channel with empty type-specific data (what Infisical's relay sends) */
  openDirectTcpip(options?: { readonly timeoutMs?: number }): Promise<SshChannel>
  openChannel(type: string, extra?: Uint8Array, timeoutMs?: number): Promise<SshChannel>
  /** keepalive@openssh.com with want-reply; any reply counts */
  ping(timeoutMs?: number): Promise<void>
  /** the shortest round trip seen to the peer (a channel open or global request answered), ms */
  roundTripMs(): number | undefined
  /** start a key re-exchange (false if one is running) */
  rekey(): boolean
  /** send DISCONNECT (by application) and close */
  close(reason?: string, code?: number): void
}

const DEFAULT_AUTH_TIMEOUT_MS = 30_000
/** The close reason (CloseInfo.reason) of a connection that did not authenticate in time. */
export const AUTH_TIMEOUT_REASON = "authentication timeout"
const DEFAULT_MAX_AUTH_TRIES = 3

/** The server's channel policy: Infisical's relay rejects every channel a gateway opens. */
export const rejectAllChannels: ChannelOpenPolicy = (type) => {
  switch (type) {
    case "session":
      return { reject: OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, description: "no shell access" }
    case "x11":
      return { reject: OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, description: "no X11 forwarding" }
    case "auth-agent":
      return { reject: OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, description: "no agent forwarding" }
    case "forwarded-tcpip":
      return { reject: OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, description: "no port forwarding" }
    default:
      return { reject: OPEN_FAILURE.UNKNOWN_CHANNEL_TYPE, description: "unknown channel type" }
  }
}

/** Build the host key signer from a host certificate and its private key. */
export const hostKeySigner = (config: HostKeyConfig): { signer: HostKeySigner; certificate: SshCertificate } => {
  const blob =
    typeof config.certificate === "string" ? parseAuthorizedKeyLine(config.certificate).blob : config.certificate
  const certificate = parseCertificate(blob)
  const algorithms = hostKeyAlgorithmsForCertificate(certificate.type)
  if (algorithms.length === 0) throw new Error(`unsupported host certificate type ${certificate.type}`)
  const pk = config.privateKey
  const privateKey: SshPrivateKey =
    "publicBlob" in pk
      ? pk
      : {
          type: pk.asymmetricKeyType === "ed25519" ? "ssh-ed25519" : "ssh-rsa",
          publicBlob: certificate.publicKey.blob,
          key: pk
        }
  if (privateKey.type !== certificate.publicKey.type) {
    throw new Error("host private key does not match the host certificate")
  }
  return {
    certificate,
    signer: {
      algorithms,
      blob: certificate.blob,
      sign: (algorithm, data) => {
        const sigAlg = signatureAlgorithmFor(algorithm)
        if (sigAlg === undefined) throw new SshProtocolError(`cannot sign with ${algorithm}`)
        return sign(privateKey, sigAlg, data)
      }
    }
  }
}

/**
 * Run the SSH server protocol on an accepted socket. Never throws for anything the peer does;
 * configuration errors (bad host certificate) throw synchronously.
 */
export const acceptSshConnection = <D extends AuthDecision>(
  socket: Duplex,
  options: ServerOptions<D>
): SshServerConnection<D> => {
  const { signer } = hostKeySigner(options.hostKey)
  const limits = options.limits
  const transport = new Transport(socket, {
    role: "server",
    hostKey: signer,
    ...(options.version !== undefined ? { version: options.version } : {}),
    ...(options.algorithms !== undefined ? { algorithms: options.algorithms } : {}),
    ...(limits?.maxPacket !== undefined ? { maxPacketLength: limits.maxPacket } : {}),
    ...(limits?.rekeyBytes !== undefined ? { rekeyBytes: limits.rekeyBytes } : {}),
    ...(options.strictKex !== undefined ? { strictKex: options.strictKex } : {})
  })
  const connection = new Connection(transport, rejectAllChannels, limits)

  type Ok = Authenticated<Extract<D, { ok: true }>>
  let resolveAuth!: (a: Ok) => void
  let rejectAuth!: (e: Error) => void
  const authenticated = new Promise<Ok>((resolve, reject) => {
    resolveAuth = resolve
    rejectAuth = reject
  })
  authenticated.catch(() => {})
  let resolveClosed!: (info: CloseInfo) => void
  const closed = new Promise<CloseInfo>((resolve) => {
    resolveClosed = resolve
  })

  const authTimer = setTimeout(
    () => transport.disconnect(DISCONNECT.BY_APPLICATION, AUTH_TIMEOUT_REASON),
    limits?.authTimeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS
  )
  authTimer.unref()

  const auth = new ServerAuth<D>(transport, {
    authenticate: options.authenticate,
    maxAuthTries: limits?.maxAuthTries ?? DEFAULT_MAX_AUTH_TRIES,
    ...(options.onAuthAttempt !== undefined ? { onAttempt: options.onAuthAttempt } : {}),
    onSuccess: (result) => {
      clearTimeout(authTimer)
      transport.preAuthRekeysLeft = -1
      if (options.keepalive !== undefined) connection.startKeepalive(options.keepalive)
      resolveAuth(result)
    }
  })

  transport.start({
    onPacket: (payload, seq) => {
      if (auth.authenticated) connection.handle(payload, seq)
      else auth.handle(payload)
    },
    onKexComplete: () => {},
    onWritable: () => connection.onWritable(),
    onClose: (info) => {
      clearTimeout(authTimer)
      connection.onClose(info)
      rejectAuth(new Error(`connection closed before authentication: ${info.reason}`))
      resolveClosed(info)
    }
  })

  return {
    authenticated,
    closed,
    get info() {
      return transport.info
    },
    get isClosed() {
      return transport.closed
    },
    get channelCount() {
      return connection.channelCount
    },
    openDirectTcpip: (o) => {
      if (!auth.authenticated) return Promise.reject(new Error("not authenticated"))
      return connection.openChannel("direct-tcpip", Buffer.alloc(0), o?.timeoutMs)
    },
    openChannel: (type, extra, timeoutMs) => {
      if (!auth.authenticated) return Promise.reject(new Error("not authenticated"))
      return connection.openChannel(type, extra, timeoutMs)
    },
    roundTripMs: () => connection.roundTripMs(),
    ping: (timeoutMs) => {
      if (!auth.authenticated) return Promise.reject(new Error("not authenticated"))
      return connection.ping(timeoutMs)
    },
    rekey: () => transport.rekey(),
    close: (reason = "closed by relay", code = DISCONNECT.BY_APPLICATION) => transport.disconnect(code, reason)
  }
}
