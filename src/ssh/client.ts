/**
 * The client role (our demo gateway and tests): connect, verify the host certificate,
 * authenticate with a user certificate, accept the relay's `direct-tcpip` channels.
 */
import type { Duplex } from "node:stream"
import { certificateBlobType, type AlgorithmPreferences } from "./algorithms.ts"
import { parseCertificate, type SshCertificate } from "./certs.ts"
import type { SshChannel } from "./channel.ts"
import { Connection, type ChannelLimits, type ChannelOpenPolicy, type KeepaliveOptions } from "./connection.ts"
import { DISCONNECT, OPEN_FAILURE } from "./constants.ts"
import { signatureAlgorithmFor, verify, type SshPrivateKey } from "./keys.ts"
import { HostKeyError, Transport, type CloseInfo, type ConnectionInfo } from "./transport.ts"
import { ClientAuth } from "./userauth.ts"

export type { CloseInfo, ConnectionInfo } from "./transport.ts"

export interface ClientOptions {
  readonly username: string
  /** the user certificate blob (a raw public key blob is sent as a raw key: for tests) */
  readonly certificate: Buffer
  readonly privateKey: SshPrivateKey
  /** accept (true) or refuse (false or a reason) the server's host certificate */
  readonly hostKeyCheck: (hostCertificate: SshCertificate, algorithm: string) => boolean | string
  /** called for each `direct-tcpip` channel the server opens; without it such opens are refused */
  readonly onDirectTcpip?: (channel: SshChannel, extra: Buffer) => void
  /** restrict algorithm lists (tests) */
  readonly algorithms?: AlgorithmPreferences
  /** force the publickey algorithm (tests) */
  readonly publicKeyAlgorithm?: string
  readonly limits?: ChannelLimits & { readonly maxPacket?: number; readonly rekeyBytes?: number }
  readonly keepalive?: KeepaliveOptions
  readonly version?: string
  readonly strictKex?: boolean
  /** fail when not authenticated after this long (default 30 s) */
  readonly handshakeTimeoutMs?: number
}

export interface SshClientConnection {
  readonly authenticated: Promise<void>
  readonly closed: Promise<CloseInfo>
  readonly info: ConnectionInfo
  readonly isClosed: boolean
  readonly channelCount: number
  openChannel(type: string, extra?: Uint8Array, timeoutMs?: number): Promise<SshChannel>
  /** send a global request; true for REQUEST_SUCCESS */
  globalRequest(name: string, data?: Uint8Array): Promise<boolean>
  ping(timeoutMs?: number): Promise<void>
  rekey(): boolean
  close(reason?: string, code?: number): void
}

export const connectSsh = (socket: Duplex, options: ClientOptions): SshClientConnection => {
  const transport = new Transport(socket, {
    role: "client",
    verifyHostKey: (algorithm, blob, signature, exchangeHash) => {
      let cert: SshCertificate
      try {
        cert = parseCertificate(blob)
      } catch {
        throw new HostKeyError("host certificates required, raw host keys not allowed")
      }
      if (certificateBlobType(algorithm) !== cert.type) {
        throw new HostKeyError(`host key algorithm ${algorithm} does not match ${cert.type}`)
      }
      const sigAlg = signatureAlgorithmFor(algorithm)
      if (sigAlg === undefined || !verify(cert.publicKey, signature, exchangeHash, [sigAlg])) {
        throw new HostKeyError("host key signature does not verify")
      }
      const verdict = options.hostKeyCheck(cert, algorithm)
      if (verdict !== true) throw new HostKeyError(verdict === false ? "host certificate rejected" : verdict)
    },
    ...(options.version !== undefined ? { version: options.version } : {}),
    ...(options.algorithms !== undefined ? { algorithms: options.algorithms } : {}),
    ...(options.limits?.maxPacket !== undefined ? { maxPacketLength: options.limits.maxPacket } : {}),
    ...(options.limits?.rekeyBytes !== undefined ? { rekeyBytes: options.limits.rekeyBytes } : {}),
    ...(options.strictKex !== undefined ? { strictKex: options.strictKex } : {})
  })

  const onDirectTcpip = options.onDirectTcpip
  const policy: ChannelOpenPolicy = (type, extra) =>
    type === "direct-tcpip" && onDirectTcpip !== undefined
      ? { accept: (ch) => onDirectTcpip(ch, extra) }
      : { reject: OPEN_FAILURE.UNKNOWN_CHANNEL_TYPE, description: "unknown channel type" }
  const channelLimits: ChannelLimits = {
    ...(options.limits?.windowSize !== undefined ? { windowSize: options.limits.windowSize } : {}),
    ...(options.limits?.maxChannels !== undefined ? { maxChannels: options.limits.maxChannels } : {}),
    ...(options.limits?.channelMaxPacket !== undefined ? { channelMaxPacket: options.limits.channelMaxPacket } : {})
  }
  const connection = new Connection(transport, policy, channelLimits)

  let authed = false
  let resolveAuth!: () => void
  let rejectAuth!: (e: Error) => void
  const authenticated = new Promise<void>((resolve, reject) => {
    resolveAuth = resolve
    rejectAuth = reject
  })
  authenticated.catch(() => {})
  let resolveClosed!: (info: CloseInfo) => void
  const closed = new Promise<CloseInfo>((resolve) => {
    resolveClosed = resolve
  })

  const timer = setTimeout(
    () => transport.disconnect(DISCONNECT.BY_APPLICATION, "handshake timeout"),
    options.handshakeTimeoutMs ?? 30_000
  )
  timer.unref()

  const auth = new ClientAuth(transport, {
    username: options.username,
    certificate: options.certificate,
    privateKey: options.privateKey,
    ...(options.publicKeyAlgorithm !== undefined ? { publicKeyAlgorithm: options.publicKeyAlgorithm } : {}),
    onSuccess: () => {
      authed = true
      transport.preAuthRekeysLeft = -1
      clearTimeout(timer)
      if (options.keepalive !== undefined) connection.startKeepalive(options.keepalive)
      resolveAuth()
    },
    onFailure: (e) => rejectAuth(e)
  })

  transport.start({
    onPacket: (payload, seq) => {
      if (authed) connection.handle(payload, seq)
      else auth.handle(payload)
    },
    onKexComplete: (first) => {
      if (first) auth.start()
    },
    onWritable: () => connection.onWritable(),
    onClose: (info) => {
      clearTimeout(timer)
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
    openChannel: (type, extra, timeoutMs) => {
      if (!authed) return Promise.reject(new Error("not authenticated"))
      return connection.openChannel(type, extra, timeoutMs)
    },
    globalRequest: (name, data) => {
      if (!authed) return Promise.reject(new Error("not authenticated"))
      return connection.globalRequest(name, data)
    },
    ping: (timeoutMs) => {
      if (!authed) return Promise.reject(new Error("not authenticated"))
      return connection.ping(timeoutMs)
    },
    rekey: () => transport.rekey(),
    close: (reason = "closed by client", code = DISCONNECT.BY_APPLICATION) => transport.disconnect(code, reason)
  }
}
