/**
 * Helpers to stand up our SSH server and client with freshly issued certificates, for tests,
 * benchmarks and the dev mode. Not used by the relay's production path.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net"
import { CERT_TIME_INFINITY, CERT_TYPE_HOST, CERT_TYPE_USER, signCertificate } from "./certs.ts"
import { connectSsh, type ClientOptions, type SshClientConnection } from "./client.ts"
import { generateSshKey, publicKeyOf, type PublicKeyAlgorithm, type SshPrivateKey } from "./keys.ts"
import { acceptSshConnection, type ServerOptions, type SshServerConnection } from "./server.ts"
import { Transport, type CloseInfo, type TransportOptions } from "./transport.ts"
import type { AuthDecision } from "./userauth.ts"

export interface TestPki {
  readonly hostCa: SshPrivateKey
  readonly userCa: SshPrivateKey
  readonly hostKey: SshPrivateKey
  readonly hostCertificate: Buffer
  readonly userKey: SshPrivateKey
  readonly userCertificate: Buffer
}

export interface CertOptions {
  readonly certType?: number
  readonly keyId?: string
  readonly principals?: ReadonlyArray<string>
  readonly validAfter?: bigint
  readonly validBefore?: bigint
  readonly criticalOptions?: ReadonlyArray<readonly [string, Uint8Array]>
}

export const issueCertificate = (ca: SshPrivateKey, key: SshPrivateKey, o: CertOptions = {}): Buffer =>
  signCertificate(
    publicKeyOf(key),
    {
      certType: o.certType ?? CERT_TYPE_USER,
      keyId: o.keyId ?? "test",
      principals: o.principals ?? [],
      validAfter: o.validAfter ?? 0n,
      validBefore: o.validBefore ?? CERT_TIME_INFINITY,
      ...(o.criticalOptions !== undefined ? { criticalOptions: o.criticalOptions } : {})
    },
    ca
  )

/** A CA pair, a host certificate (principal `host`) and a user certificate (principal `user`). */
export const makeTestPki = (
  options: { keyType?: PublicKeyAlgorithm; host?: string; user?: string; userKeyId?: string } = {}
): TestPki => {
  const keyType = options.keyType ?? "ssh-rsa"
  const hostCa = generateSshKey(keyType)
  const userCa = generateSshKey(keyType)
  const hostKey = generateSshKey(keyType)
  const userKey = generateSshKey(keyType)
  return {
    hostCa,
    userCa,
    hostKey,
    userKey,
    hostCertificate: issueCertificate(hostCa, hostKey, {
      certType: CERT_TYPE_HOST,
      keyId: "relay-server",
      principals: [options.host ?? "127.0.0.1:2222"]
    }),
    userCertificate: issueCertificate(userCa, userKey, {
      certType: CERT_TYPE_USER,
      keyId: options.userKeyId ?? "client-test",
      principals: [options.user ?? "gateway-1"]
    })
  }
}

export interface TestServer<D extends AuthDecision> {
  readonly port: number
  readonly server: Server
  /** every connection accepted, in order */
  readonly connections: Array<SshServerConnection<D>>
  /** resolves with the next accepted connection */
  nextConnection(): Promise<SshServerConnection<D>>
  close(): Promise<void>
}

export const startTestServer = async <D extends AuthDecision>(
  options: ServerOptions<D> | ((socket: Socket) => ServerOptions<D>),
  onConnection?: (connection: SshServerConnection<D>, socket: Socket) => void
): Promise<TestServer<D>> => {
  const connections: Array<SshServerConnection<D>> = []
  const waiters: Array<(c: SshServerConnection<D>) => void> = []
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    const conn = acceptSshConnection(socket, typeof options === "function" ? options(socket) : options)
    connections.push(conn)
    onConnection?.(conn, socket)
    const w = waiters.shift()
    if (w !== undefined) w(conn)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  let seen = 0
  return {
    port,
    server,
    connections,
    nextConnection: () => {
      if (connections.length > seen) return Promise.resolve(connections[seen++]!)
      return new Promise((resolve) =>
        waiters.push((c) => {
          seen++
          resolve(c)
        })
      )
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
}

/** Connect our client to 127.0.0.1:port. */
export const connectTestClient = (port: number, options: ClientOptions): SshClientConnection => {
  const socket = connect(port, "127.0.0.1")
  return connectSsh(socket, options)
}

/**
 * A bare client transport (no userauth, no connection layer) for driving a server with hand-made
 * messages after the key exchange. `next()` yields each message the server sends after the kex.
 */
export interface RawClient {
  readonly transport: Transport
  readonly socket: Socket
  /** resolves after the first key exchange */
  readonly ready: Promise<void>
  readonly closed: Promise<CloseInfo>
  /** the next message from the server (rejects if the connection closes first) */
  next(): Promise<Buffer>
  send(payload: Uint8Array): void
}

export const rawClient = (port: number, options: Partial<TransportOptions> = {}): RawClient => {
  const socket = connect(port, "127.0.0.1")
  const transport = new Transport(socket, { role: "client", verifyHostKey: () => {}, ...options })
  const queue: Array<Buffer> = []
  const waiters: Array<{ resolve: (b: Buffer) => void; reject: (e: Error) => void }> = []
  let closedInfo: CloseInfo | undefined
  let resolveReady!: () => void
  let rejectReady!: (e: Error) => void
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve
    rejectReady = reject
  })
  ready.catch(() => {})
  let resolveClosed!: (i: CloseInfo) => void
  const closed = new Promise<CloseInfo>((r) => (resolveClosed = r))
  transport.start({
    onPacket: (payload) => {
      const w = waiters.shift()
      if (w !== undefined) w.resolve(Buffer.from(payload))
      else queue.push(Buffer.from(payload))
    },
    onKexComplete: (first) => {
      if (first) resolveReady()
    },
    onWritable: () => {},
    onClose: (info) => {
      closedInfo = info
      rejectReady(new Error(info.reason))
      for (const w of waiters.splice(0)) w.reject(new Error(`closed: ${info.reason}`))
      resolveClosed(info)
    }
  })
  return {
    transport,
    socket,
    ready,
    closed,
    next: () => {
      const b = queue.shift()
      if (b !== undefined) return Promise.resolve(b)
      if (closedInfo !== undefined) return Promise.reject(new Error(`closed: ${closedInfo.reason}`))
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }))
    },
    send: (payload) => transport.send(Buffer.from(payload))
  }
}
