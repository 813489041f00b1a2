/**
 * The SSH transport layer (RFC 4253): version exchange, binary packet protocol, KEXINIT/NEWKEYS
 * state machine, rekeying (initiated by either side, mid-stream), strict KEX (OpenSSH
 * PROTOCOL §1.10), ext-info (RFC 8308) and disconnect.
 *
 * It is plain synchronous code driven by socket events: bytes in -> packets out to a handler;
 * payloads in -> sealed packets on the socket. Nothing here ever throws to the event loop: every
 * error ends in a DISCONNECT (when one can still be sent) and a closed socket.
 *
 * Sending while a key exchange is in progress (RFC 4253 §7.1): from our KEXINIT until our NEWKEYS
 * only transport messages leave; every other payload is queued and flushed right after NEWKEYS.
 * Channel data is not queued here: `canSendData()` turns false and the channel layer waits for
 * `onWritable`, so a rekey or a slow socket holds data in the channels' own (window-bounded) buffers.
 */
import type { Duplex } from "node:stream"
import {
  algorithmLists,
  CLIENT_HOST_KEY_ALGORITHMS,
  encodeKexInit,
  EXT_INFO_C,
  guessWasRight,
  KEX_STRICT_C,
  KEX_STRICT_S,
  negotiate,
  NegotiationError,
  parseKexInit,
  type AlgorithmLists,
  type AlgorithmPreferences,
  type KexInit,
  type Negotiated
} from "./algorithms.ts"
import {
  cipherSpec,
  createOpener,
  createSealer,
  macSpec,
  MacError,
  NoneOpener,
  NoneSealer,
  SEAL_HEADER,
  SEAL_TRAILER,
  type DirectionKeys,
  type PacketOpener,
  type PacketSealer
} from "./cipher.ts"
import { DISCONNECT, MSG } from "./constants.ts"
import {
  createKeyAgreement,
  deriveKey,
  encodeSecret,
  exchangeHash,
  KexError,
  kexMethod,
  MAX_KEX_PUBLIC,
  writePublicValue,
  type KexMethod,
  type KeyAgreement
} from "./kex.ts"
import { SshReader, SshWireError, SshWriter } from "./wire.ts"

/** An error that ends the connection with a DISCONNECT carrying `code`. */
export class SshProtocolError extends Error {
  override readonly name = "SshProtocolError"
  constructor(
    message: string,
    readonly code: number = DISCONNECT.PROTOCOL_ERROR
  ) {
    super(message)
  }
}

/** The peer's host key failed verification (client role). */
export class HostKeyError extends SshProtocolError {
  constructor(message: string) {
    super(message, DISCONNECT.HOST_KEY_NOT_VERIFIABLE)
  }
}

export interface CloseInfo {
  /** who ended the connection: we did, the peer sent DISCONNECT, or the socket went away */
  readonly by: "local" | "peer" | "network"
  /** SSH disconnect reason code when a DISCONNECT was sent or received */
  readonly code: number | undefined
  readonly reason: string
}

export interface ConnectionInfo {
  readonly kex: string
  readonly hostKeyAlgorithm: string
  readonly cipherCS: string
  readonly cipherSC: string
  readonly macCS: string
  readonly macSC: string
  readonly remoteVersion: string
  readonly strictKex: boolean
  /** number of completed key exchanges (1 after the initial one) */
  readonly kexCount: number
}

/** Server role: signs exchange hashes with the host certificate's key. */
export interface HostKeySigner {
  /** host key algorithms we can offer, in preference order */
  readonly algorithms: ReadonlyArray<string>
  /** K_S: the host certificate blob */
  readonly blob: Buffer
  sign(algorithm: string, exchangeHash: Buffer): Buffer
}

/** Client role: verify K_S and the signature over H; throw HostKeyError to refuse. */
export type HostKeyVerifier = (algorithm: string, hostKeyBlob: Buffer, signature: Buffer, exchangeHash: Buffer) => void

export interface TransportHandler {
  /** A message for the upper layers (service request/accept, userauth, connection). */
  onPacket(payload: Buffer, seq: number): void
  onKexComplete(first: boolean): void
  /** Channel data may be sent again (kex finished, or the socket drained). */
  onWritable(): void
  onClose(info: CloseInfo): void
}

export interface TransportOptions {
  readonly role: "server" | "client"
  /** our identification string without CR LF, e.g. "SSH-2.0-InfisicalRelay" */
  readonly version?: string
  readonly algorithms?: AlgorithmPreferences
  readonly hostKey?: HostKeySigner
  readonly verifyHostKey?: HostKeyVerifier
  /** largest packet_length we accept (default 256 KiB + 1 KiB) */
  readonly maxPacketLength?: number
  /** rekey after this many bytes in either direction since the last kex (default 1 GiB) */
  readonly rekeyBytes?: number
  /** offer strict KEX (default true) */
  readonly strictKex?: boolean
  /** server role: signature algorithms for server-sig-algs */
  readonly serverSigAlgs?: ReadonlyArray<string>
}

export const DEFAULT_VERSION = "SSH-2.0-InfisicalRelay_1.0"
export const DEFAULT_MAX_PACKET_LENGTH = 256 * 1024 + 1024
export const DEFAULT_REKEY_BYTES = 1024 * 1024 * 1024
const REKEY_PACKETS = 2 ** 31
/** RFC 4253 §4.2: the identification line is at most 255 bytes including CR LF. */
const MAX_VERSION_LINE = 255
/** Lines a server may send before its identification (client role only). */
const MAX_PRE_BANNER_LINES = 50
const MAX_PRE_BANNER_LINE = 1024
/** Socket backlog above which channel data waits for 'drain'. */
const WRITE_HIGH_WATER = 512 * 1024
/** Socket backlog above which we stop reading (a peer that sends requests but never reads replies). */
const READ_PAUSE_WATER = 4 * 1024 * 1024
/** Upper bound of non-kex payloads queued during a key exchange. */
const MAX_QUEUED_BYTES = 16 * 1024 * 1024
const CLOSE_GRACE_MS = 2000
const DEFAULT_SERVER_SIG_ALGS = ["rsa-sha2-256", "rsa-sha2-512", "ssh-rsa", "ssh-ed25519"]

interface KexRound {
  readonly negotiated: Negotiated
  readonly method: KexMethod
  readonly agreement: KeyAgreement
  readonly clientInit: Buffer
  readonly serverInit: Buffer
  skipNextKexPacket: boolean
  exchangeHash: Buffer | undefined
  pendingOpener: PacketOpener | undefined
  sentNewKeys: boolean
  recvNewKeys: boolean
}

const EMPTY = Buffer.alloc(0)

/**
 * The plaintext packet buffer, shared by every connection in the process: a packet is assembled
 * and sealed synchronously, and sealers return fresh buffers, so nothing outlives one use. This
 * keeps an idle connection free of a per-connection packet buffer.
 */
let scratch: Buffer = Buffer.allocUnsafe(64 * 1024)

export class Transport {
  readonly role: "server" | "client"
  readonly localVersion: string
  remoteVersion = ""
  /** set after the first key exchange */
  sessionId: Buffer | undefined
  /** client role: the server's server-sig-algs extension, when it sent one */
  serverSigAlgs: ReadonlyArray<string> | undefined
  strictKex = false
  kexCount = 0
  negotiated: Negotiated | undefined

  private handler: TransportHandler | undefined
  private phase: "version" | "packet" | "closed" = "version"
  private readonly lists: AlgorithmLists
  private readonly maxPacketLength: number
  private readonly rekeyBytes: number
  private readonly offerStrict: boolean

  // receive side
  private versionBuf: Buffer = EMPTY
  private preBannerLines = 0
  private inHead: Buffer = EMPTY
  private inOff = 0
  private inTail: Array<Buffer> = []
  private inAvail = 0
  private pendingLength = -1
  private opener: PacketOpener = new NoneOpener()
  private recvSeq = 0
  private readPaused = false

  // send side
  private sealer: PacketSealer = new NoneSealer()
  private sendSeq = 0
  private corked = false
  private queue: Array<Buffer> = []
  private queuedBytes = 0

  // key exchange
  private ourKexInit: Buffer | undefined
  private peerKexInit: Buffer | undefined
  private peerKexInitSeq = 0
  private round: KexRound | undefined
  private peerWantsExtInfo = false
  private bytesSinceKex = 0
  private packetsSinceKex = 0

  private closeTimer: NodeJS.Timeout | undefined
  /**
   * Peer-initiated re-exchanges still allowed before authentication; the upper layer sets it to -1
   * (unlimited) once the peer has authenticated.
   */
  preAuthRekeysLeft = 2

  constructor(
    readonly socket: Duplex,
    private readonly options: TransportOptions
  ) {
    this.role = options.role
    this.localVersion = options.version ?? DEFAULT_VERSION
    if (!/^SSH-2\.0-[\x21-\x7e]+( [\x20-\x7e]*)?$/.test(this.localVersion) || this.localVersion.length > 253) {
      throw new Error(`invalid identification string ${JSON.stringify(this.localVersion)}`)
    }
    this.maxPacketLength = options.maxPacketLength ?? DEFAULT_MAX_PACKET_LENGTH
    this.rekeyBytes = options.rekeyBytes ?? DEFAULT_REKEY_BYTES
    this.offerStrict = options.strictKex ?? true
    if (this.role === "server") {
      if (options.hostKey === undefined) throw new Error("server transport needs a host key")
      this.lists = algorithmLists(options.hostKey.algorithms, options.algorithms)
    } else {
      if (options.verifyHostKey === undefined) throw new Error("client transport needs a host key verifier")
      this.lists = algorithmLists(CLIENT_HOST_KEY_ALGORITHMS, options.algorithms)
    }
  }

  /** Attach the upper layer and start: send our identification and KEXINIT. */
  start(handler: TransportHandler): void {
    this.handler = handler
    const s = this.socket
    s.on("data", (chunk: Buffer) => this.onData(chunk))
    s.on("error", (err: Error) => this.finish({ by: "network", code: undefined, reason: `socket error: ${err.message}` }))
    s.on("end", () => this.finish({ by: "network", code: undefined, reason: "connection closed by peer" }))
    s.on("close", () => this.finish({ by: "network", code: undefined, reason: "connection lost" }))
    s.on("drain", () => this.onDrain())
    const maybeSocket = s as Duplex & { setNoDelay?: (b: boolean) => unknown }
    if (typeof maybeSocket.setNoDelay === "function") maybeSocket.setNoDelay(true)
    if (s.destroyed) {
      this.finish({ by: "network", code: undefined, reason: "connection lost" })
      return
    }
    this.rawWrite(Buffer.from(this.localVersion + "\r\n", "latin1"))
    // A server waits for the client's identification before its KEXINIT, as OpenSSH and x/crypto
    // do: a scanner or a stray protocol gets our version line and nothing more.
    if (this.role === "client") this.sendKexInit()
  }

  get closed(): boolean {
    return this.phase === "closed"
  }

  get info(): ConnectionInfo {
    const n = this.negotiated
    return {
      kex: n?.kex ?? "",
      hostKeyAlgorithm: n?.hostKey ?? "",
      cipherCS: n?.cipherCS ?? "",
      cipherSC: n?.cipherSC ?? "",
      macCS: n === undefined ? "" : (n.macCS ?? "<implicit>"),
      macSC: n === undefined ? "" : (n.macSC ?? "<implicit>"),
      remoteVersion: this.remoteVersion,
      strictKex: this.strictKex,
      kexCount: this.kexCount
    }
  }

  // ---------------------------------------------------------------------------------------------
  // sending

  /** Send a payload (queued while a key exchange blocks non-kex messages). Dropped once closed. */
  send(payload: Buffer): void {
    if (this.phase === "closed") return
    const type = payload[0]!
    if (this.sendBlocked() && !isTransportMessage(type)) {
      this.queuedBytes += payload.length
      if (this.queuedBytes > MAX_QUEUED_BYTES) {
        this.fail(new SshProtocolError("too much output queued during key exchange", DISCONNECT.BY_APPLICATION))
        return
      }
      this.queue.push(payload)
      return
    }
    this.writePayload(payload)
  }

  /** Whether channel data may be sent now (no kex in progress, socket not backed up). */
  canSendData(): boolean {
    return (
      this.phase === "packet" && !this.sendBlocked() && (this.socket.writableLength ?? 0) < WRITE_HIGH_WATER
    )
  }

  /**
   * Send CHANNEL_DATA for `recipient` with data[offset, offset+length), copying the data once into
   * the packet buffer. Only call when canSendData() is true.
   */
  sendChannelData(recipient: number, data: Uint8Array, offset: number, length: number): void {
    if (this.phase === "closed") return
    const payloadLength = 9 + length
    const s = this.ensureScratch(payloadLength)
    s[SEAL_HEADER] = MSG.CHANNEL_DATA
    s.writeUInt32BE(recipient, SEAL_HEADER + 1)
    s.writeUInt32BE(length, SEAL_HEADER + 5)
    s.set(data.subarray(offset, offset + length), SEAL_HEADER + 9)
    this.sealAndWrite(payloadLength)
  }

  /** Start a key re-exchange now. False when one is already running or the first has not finished. */
  rekey(): boolean {
    if (this.phase !== "packet" || this.sessionId === undefined || this.ourKexInit !== undefined) return false
    this.sendKexInit()
    return true
  }

  /** Send DISCONNECT and close. */
  disconnect(code: number = DISCONNECT.BY_APPLICATION, description = "closed by application"): void {
    if (this.phase === "closed") return
    if (this.phase === "packet") this.trySendDisconnect(code, description)
    this.finish({ by: "local", code, reason: description })
  }

  /** Reply UNIMPLEMENTED for a packet the upper layers do not know. */
  sendUnimplemented(seq: number): void {
    this.send(Buffer.from(new SshWriter(8).byte(MSG.UNIMPLEMENTED).uint32(seq).toBuffer()))
  }

  private sendBlocked(): boolean {
    return this.ourKexInit !== undefined && !(this.round?.sentNewKeys ?? false)
  }

  private ensureScratch(payloadLength: number): Buffer {
    const need = SEAL_HEADER + payloadLength + SEAL_TRAILER
    if (scratch.length < need) scratch = Buffer.allocUnsafe(Math.max(need, scratch.length * 2))
    return scratch
  }

  private writePayload(payload: Uint8Array): void {
    const s = this.ensureScratch(payload.length)
    s.set(payload, SEAL_HEADER)
    this.sealAndWrite(payload.length)
  }

  private sealAndWrite(payloadLength: number): void {
    const parts = this.sealer.seal(this.sendSeq, scratch, payloadLength)
    this.sendSeq = (this.sendSeq + 1) >>> 0
    let n = 0
    for (const p of parts) {
      this.rawWrite(p)
      n += p.length
    }
    this.bytesSinceKex += n
    this.packetsSinceKex++
    this.maybeRekey()
  }

  /**
   * Write to the socket, corked until the next tick: every packet sealed in this tick (a batch of
   * channel data, or a reply plus a WINDOW_ADJUST) leaves in one writev.
   */
  private rawWrite(b: Buffer): void {
    const s = this.socket
    if (s.destroyed || s.writableEnded) return
    if (!this.corked) {
      this.corked = true
      s.cork()
      process.nextTick(this.uncork)
    }
    s.write(b)
  }

  private readonly uncork = (): void => {
    this.corked = false
    this.socket.uncork()
  }

  private maybeRekey(): void {
    if (
      this.ourKexInit === undefined &&
      this.sessionId !== undefined &&
      this.phase === "packet" &&
      (this.bytesSinceKex >= this.rekeyBytes || this.packetsSinceKex >= REKEY_PACKETS)
    ) {
      this.sendKexInit()
    }
  }

  private trySendDisconnect(code: number, description: string): void {
    try {
      this.writePayload(
        new SshWriter(64 + description.length).byte(MSG.DISCONNECT).uint32(code).string(description).string("").toBuffer()
      )
    } catch {
      // nothing more to do: we are closing anyway
    }
  }

  private onDrain(): void {
    if (this.readPaused && this.phase !== "closed") {
      this.readPaused = false
      this.socket.resume()
    }
    if (this.phase === "packet") this.safely(() => this.handler?.onWritable())
  }

  // ---------------------------------------------------------------------------------------------
  // receiving

  private onData(chunk: Buffer): void {
    if (this.phase === "closed") return
    this.safely(() => {
      if (this.phase === "version") {
        const rest = this.readVersion(chunk)
        if (rest === undefined) return
        this.pushInput(rest)
      } else {
        this.pushInput(chunk)
      }
      this.processPackets()
      if (!this.readPaused && this.phase === "packet" && (this.socket.writableLength ?? 0) > READ_PAUSE_WATER) {
        this.readPaused = true
        this.socket.pause()
      }
    })
  }

  private safely(f: () => void): void {
    try {
      f()
    } catch (e) {
      this.fail(e)
    }
  }

  /** Accumulate identification lines; returns the bytes after our peer's identification line. */
  private readVersion(chunk: Buffer): Buffer | undefined {
    this.versionBuf = this.versionBuf.length === 0 ? chunk : Buffer.concat([this.versionBuf, chunk])
    for (;;) {
      const buf = this.versionBuf
      const nl = buf.indexOf(0x0a)
      const isSsh = buf.length >= 4 && buf.subarray(0, 4).toString("latin1") === "SSH-"
      if (nl < 0) {
        if (buf.length >= MAX_PRE_BANNER_LINE || (isSsh && buf.length >= MAX_VERSION_LINE)) {
          throw new SshProtocolError("identification line too long", DISCONNECT.PROTOCOL_VERSION_NOT_SUPPORTED)
        }
        if (this.role === "server" && buf.length >= 4 && !isSsh) {
          throw new SshProtocolError("not an SSH client", DISCONNECT.PROTOCOL_VERSION_NOT_SUPPORTED)
        }
        return undefined
      }
      const lineEnd = nl > 0 && buf[nl - 1] === 0x0d ? nl - 1 : nl
      const line = buf.subarray(0, lineEnd)
      this.versionBuf = buf.subarray(nl + 1)
      if (isSsh) {
        if (nl + 1 > MAX_VERSION_LINE) throw new SshProtocolError("identification line too long")
        if (line.includes(0)) throw new SshProtocolError("NUL in identification line")
        const version = line.toString("latin1")
        if (!version.startsWith("SSH-2.0-") && !version.startsWith("SSH-1.99-")) {
          throw new SshProtocolError(
            `unsupported protocol version ${JSON.stringify(version.slice(0, 40))}`,
            DISCONNECT.PROTOCOL_VERSION_NOT_SUPPORTED
          )
        }
        this.remoteVersion = version
        this.phase = "packet"
        if (this.role === "server") this.sendKexInit()
        const rest = this.versionBuf
        this.versionBuf = EMPTY
        return rest
      }
      if (this.role === "server") {
        throw new SshProtocolError("not an SSH client", DISCONNECT.PROTOCOL_VERSION_NOT_SUPPORTED)
      }
      if (nl + 1 > MAX_PRE_BANNER_LINE || ++this.preBannerLines > MAX_PRE_BANNER_LINES) {
        throw new SshProtocolError("too much data before the identification line")
      }
    }
  }

  private pushInput(chunk: Buffer): void {
    if (chunk.length === 0) return
    if (this.inAvail === 0) {
      this.inHead = chunk
      this.inOff = 0
    } else {
      this.inTail.push(chunk)
    }
    this.inAvail += chunk.length
  }

  /**
   * Make the next n bytes contiguous in inHead; false when fewer are buffered. Only the bytes
   * needed are copied: a partly used chunk stays in the queue as a view.
   */
  private contiguous(n: number): boolean {
    const headAvail = this.inHead.length - this.inOff
    if (headAvail >= n) return true
    if (this.inAvail < n) return false
    const out = Buffer.allocUnsafe(n)
    this.inHead.copy(out, 0, this.inOff)
    let filled = headAvail
    while (filled < n) {
      const chunk = this.inTail[0]!
      const take = Math.min(chunk.length, n - filled)
      chunk.copy(out, filled, 0, take)
      filled += take
      if (take === chunk.length) this.inTail.shift()
      else this.inTail[0] = chunk.subarray(take)
    }
    this.inHead = out
    this.inOff = 0
    return true
  }

  private consume(n: number): void {
    this.inOff += n
    this.inAvail -= n
    if (this.inOff >= this.inHead.length) {
      const next = this.inTail.shift()
      this.inHead = next ?? EMPTY
      this.inOff = 0
    }
  }

  private processPackets(): void {
    while (this.phase === "packet") {
      const opener = this.opener
      if (this.pendingLength < 0) {
        if (!this.contiguous(opener.headerLength)) return
        const len = opener.packetLength(this.inHead, this.inOff)
        if (len < 5 || len > this.maxPacketLength) throw new SshProtocolError(`bad packet length ${len}`)
        if ((opener.lengthExcluded ? len : len + 4) % opener.blockSize !== 0) {
          throw new SshProtocolError(`packet length ${len} not a multiple of the block size`)
        }
        this.pendingLength = len
      }
      const len = this.pendingLength
      const total = 4 + len + opener.macLength
      if (!this.contiguous(total)) return
      const seq = this.recvSeq
      this.recvSeq = (this.recvSeq + 1) >>> 0
      const plain = opener.open(seq, this.inHead, this.inOff, len)
      this.consume(total)
      this.pendingLength = -1
      const padding = plain[0]!
      if (padding < 4 || padding + 2 > plain.length) throw new SshProtocolError(`bad padding length ${padding}`)
      const payload = plain.subarray(1, plain.length - padding)
      this.bytesSinceKex += total
      this.packetsSinceKex++
      this.dispatch(payload, seq)
      this.maybeRekey()
    }
  }

  private dispatch(payload: Buffer, seq: number): void {
    const type = payload[0]!
    if (type === MSG.DISCONNECT) return this.onDisconnect(payload)
    const round = this.round
    const peerInKex = this.peerKexInit !== undefined && !(round?.recvNewKeys ?? false)
    const firstKex = this.sessionId === undefined

    if (peerInKex) {
      // RFC 4253 §7.1: between its KEXINIT and its NEWKEYS the peer sends only transport messages.
      const generic = type === MSG.IGNORE || type === MSG.DEBUG || type === MSG.UNIMPLEMENTED
      if (generic && !(this.strictKex && firstKex)) return
      if (type === MSG.NEWKEYS) return this.onNewKeys()
      if (type >= 30 && type <= 49) return this.onKexMessage(payload)
      throw new SshProtocolError(`unexpected message ${type} during key exchange`)
    }
    if (firstKex) {
      if (type === MSG.KEXINIT) return this.onKexInit(payload, seq)
      if (type === MSG.IGNORE || type === MSG.DEBUG || type === MSG.UNIMPLEMENTED) return
      throw new SshProtocolError(`unexpected message ${type} before key exchange`)
    }
    switch (type) {
      case MSG.IGNORE:
      case MSG.DEBUG:
      case MSG.UNIMPLEMENTED:
        return
      case MSG.EXT_INFO:
        return this.onExtInfo(payload)
      case MSG.KEXINIT:
        return this.onKexInit(payload, seq)
    }
    if (type === MSG.NEWKEYS || (type >= 30 && type <= 49)) {
      throw new SshProtocolError(`unexpected key exchange message ${type}`)
    }
    if (type === MSG.SERVICE_REQUEST || type === MSG.SERVICE_ACCEPT || type >= 50) {
      this.handler?.onPacket(payload, seq)
      return
    }
    this.sendUnimplemented(seq)
  }

  private onDisconnect(payload: Buffer): void {
    let code: number | undefined
    let description = ""
    try {
      const r = new SshReader(payload, 1)
      code = r.uint32()
      description = r.string(1024)
    } catch {
      // a malformed DISCONNECT still disconnects
    }
    const printable = description.replace(/[^\x20-\x7e]/g, "?")
    this.finish({ by: "peer", code, reason: printable === "" ? "disconnected by peer" : printable })
  }

  private onExtInfo(payload: Buffer): void {
    if (this.role !== "client") return
    const r = new SshReader(payload, 1)
    const n = r.uint32()
    if (n > 64) throw new SshProtocolError("too many extensions")
    for (let i = 0; i < n; i++) {
      const name = r.string(256)
      const value = r.bytes()
      if (name === "server-sig-algs") this.serverSigAlgs = new SshReader(sshString(value)).nameList()
    }
  }

  // ---------------------------------------------------------------------------------------------
  // key exchange

  private sendKexInit(): void {
    const first = this.sessionId === undefined
    const markers: Array<string> = []
    if (first) {
      if (this.role === "client") {
        markers.push(EXT_INFO_C)
        if (this.offerStrict) markers.push(KEX_STRICT_C)
      } else if (this.offerStrict) {
        markers.push(KEX_STRICT_S)
      }
    }
    const init = encodeKexInit(this.lists, markers)
    this.ourKexInit = init
    this.writePayload(init)
    if (this.peerKexInit !== undefined) this.startRound()
  }

  private onKexInit(payload: Buffer, seq: number): void {
    if (this.peerKexInit !== undefined) throw new SshProtocolError("unexpected KEXINIT")
    if (this.sessionId !== undefined && this.ourKexInit === undefined && this.preAuthRekeysLeft >= 0) {
      // A peer that keeps re-keying before it has authenticated only burns our CPU.
      if (this.preAuthRekeysLeft-- === 0) throw new SshProtocolError("too many key exchanges before authentication")
    }
    this.peerKexInit = Buffer.from(payload)
    this.peerKexInitSeq = seq
    if (this.ourKexInit === undefined) this.sendKexInit()
    else this.startRound()
  }

  private startRound(): void {
    const ours = this.ourKexInit!
    const theirs = this.peerKexInit!
    const peer: KexInit = parseKexInit(theirs)
    const mine: KexInit = parseKexInit(ours)
    const [client, server] = this.role === "client" ? [mine, peer] : [peer, mine]
    const negotiated = negotiate(client, server)
    if (this.sessionId === undefined) {
      if (this.role === "server") {
        this.strictKex = this.offerStrict && peer.kex.includes(KEX_STRICT_C)
        this.peerWantsExtInfo = peer.kex.includes(EXT_INFO_C)
      } else {
        this.strictKex = this.offerStrict && peer.kex.includes(KEX_STRICT_S)
      }
      if (this.strictKex && this.peerKexInitSeq !== 0) {
        throw new SshProtocolError("strict KEX: KEXINIT was not the first packet")
      }
    }
    const method = kexMethod(negotiated.kex)
    const round: KexRound = {
      negotiated,
      method,
      agreement: createKeyAgreement(method),
      clientInit: this.role === "client" ? ours : theirs,
      serverInit: this.role === "client" ? theirs : ours,
      skipNextKexPacket: peer.firstKexFollows && !guessWasRight(peer, negotiated),
      exchangeHash: undefined,
      pendingOpener: undefined,
      sentNewKeys: false,
      recvNewKeys: false
    }
    this.round = round
    if (this.role === "client") {
      const w = new SshWriter(1100).byte(MSG.KEXDH_INIT)
      writePublicValue(w, method, round.agreement.publicValue)
      this.writePayload(w.toBuffer())
    }
  }

  private onKexMessage(payload: Buffer): void {
    const round = this.round
    if (round === undefined || round.exchangeHash !== undefined) {
      throw new SshProtocolError(`unexpected key exchange message ${payload[0]}`)
    }
    if (round.skipNextKexPacket) {
      round.skipNextKexPacket = false
      return
    }
    const type = payload[0]
    const method = round.method
    const r = new SshReader(payload, 1)
    const readPublic = (): Uint8Array => {
      if (method.kind === "ecdh") return r.bytes(64)
      const v = r.mpintBytes(MAX_KEX_PUBLIC)
      if (v.length > 0 && (v[0]! & 0x80) !== 0) throw new KexError("negative DH public value")
      return v
    }
    if (this.role === "server") {
      if (type !== MSG.KEXDH_INIT) throw new SshProtocolError(`unexpected key exchange message ${type}`)
      const clientPublic = readPublic()
      const secret = round.agreement.computeSecret(clientPublic)
      const hostKey = this.options.hostKey!
      const h = exchangeHash(method, {
        clientVersion: this.remoteVersion,
        serverVersion: this.localVersion,
        clientKexInit: round.clientInit,
        serverKexInit: round.serverInit,
        hostKeyBlob: hostKey.blob,
        clientPublic,
        serverPublic: round.agreement.publicValue,
        secret
      })
      const signature = hostKey.sign(round.negotiated.hostKey, h)
      const w = new SshWriter(hostKey.blob.length + signature.length + 1200).byte(MSG.KEXDH_REPLY).bytes(hostKey.blob)
      writePublicValue(w, method, round.agreement.publicValue)
      w.bytes(signature)
      this.writePayload(w.toBuffer())
      this.installKeys(round, secret, h)
    } else {
      if (type !== MSG.KEXDH_REPLY) throw new SshProtocolError(`unexpected key exchange message ${type}`)
      const hostKeyBlob = Buffer.from(r.bytes(16384))
      const serverPublic = readPublic()
      const signature = Buffer.from(r.bytes(16384))
      const secret = round.agreement.computeSecret(serverPublic)
      const h = exchangeHash(method, {
        clientVersion: this.localVersion,
        serverVersion: this.remoteVersion,
        clientKexInit: round.clientInit,
        serverKexInit: round.serverInit,
        hostKeyBlob,
        clientPublic: round.agreement.publicValue,
        serverPublic,
        secret
      })
      this.options.verifyHostKey!(round.negotiated.hostKey, hostKeyBlob, signature, h)
      this.installKeys(round, secret, h)
    }
  }

  /** Derive keys, send NEWKEYS and switch our outgoing direction to the new keys. */
  private installKeys(round: KexRound, secret: Buffer, h: Buffer): void {
    round.exchangeHash = h
    const sessionId = this.sessionId ?? h
    const k = encodeSecret(secret)
    const n = round.negotiated
    const direction = (cipherName: string, macName: string | undefined, letters: string): DirectionKeys => {
      const cipher = cipherSpec(cipherName)
      const mac = macName === undefined ? undefined : macSpec(macName)
      const hash = round.method.hash
      return {
        cipher,
        mac,
        iv: deriveKey(hash, k, h, sessionId, letters[0]!, cipher.ivLength),
        key: deriveKey(hash, k, h, sessionId, letters[1]!, cipher.keyLength),
        macKey: deriveKey(hash, k, h, sessionId, letters[2]!, mac?.keyLength ?? 0)
      }
    }
    const cs = direction(n.cipherCS, n.macCS, "ACE")
    const sc = direction(n.cipherSC, n.macSC, "BDF")
    const [out, inn] = this.role === "client" ? [cs, sc] : [sc, cs]
    round.pendingOpener = createOpener(inn)
    this.writePayload(NEWKEYS_PAYLOAD)
    this.sealer = createSealer(out)
    if (this.strictKex) this.sendSeq = 0
    round.sentNewKeys = true
    this.negotiated = n
    const first = this.sessionId === undefined
    if (first && this.role === "server" && this.peerWantsExtInfo) {
      const algs = this.options.serverSigAlgs ?? DEFAULT_SERVER_SIG_ALGS
      this.writePayload(
        new SshWriter(128).byte(MSG.EXT_INFO).uint32(1).string("server-sig-algs").nameList(algs).toBuffer()
      )
    }
    const queued = this.queue
    this.queue = []
    this.queuedBytes = 0
    for (const p of queued) this.writePayload(p)
    this.maybeCompleteRound()
    if (this.phase === "packet") this.handler?.onWritable()
  }

  private onNewKeys(): void {
    const round = this.round
    if (round === undefined || round.pendingOpener === undefined) throw new SshProtocolError("unexpected NEWKEYS")
    this.opener = round.pendingOpener
    if (this.strictKex) this.recvSeq = 0
    round.recvNewKeys = true
    this.maybeCompleteRound()
  }

  private maybeCompleteRound(): void {
    const round = this.round
    if (round === undefined || !round.sentNewKeys || !round.recvNewKeys) return
    const first = this.sessionId === undefined
    if (first) this.sessionId = round.exchangeHash
    this.round = undefined
    this.ourKexInit = undefined
    this.peerKexInit = undefined
    this.bytesSinceKex = 0
    this.packetsSinceKex = 0
    this.kexCount++
    this.handler?.onKexComplete(first)
  }

  // ---------------------------------------------------------------------------------------------
  // closing

  /** End the connection because of an error (DISCONNECT with a code derived from the error). */
  fail(e: unknown): void {
    if (this.phase === "closed") return
    let code: number = DISCONNECT.PROTOCOL_ERROR
    let message = e instanceof Error ? e.message : String(e)
    if (e instanceof SshProtocolError) code = e.code
    else if (e instanceof MacError) code = DISCONNECT.MAC_ERROR
    else if (e instanceof KexError || e instanceof NegotiationError) code = DISCONNECT.KEY_EXCHANGE_FAILED
    else if (e instanceof SshWireError) message = `malformed packet: ${message}`
    else if (!(e instanceof Error)) message = "internal error"
    if (this.phase === "version") {
      this.finish({ by: "local", code, reason: message })
      return
    }
    this.disconnect(code, message)
  }

  private finish(info: CloseInfo): void {
    if (this.phase === "closed") return
    this.phase = "closed"
    this.queue = []
    this.inHead = EMPTY
    this.inTail = []
    this.inAvail = 0
    const s = this.socket
    if (!s.destroyed) {
      if (info.by === "local") {
        s.end()
        this.closeTimer = setTimeout(() => s.destroy(), CLOSE_GRACE_MS)
        this.closeTimer.unref()
        s.once("close", () => clearTimeout(this.closeTimer))
      } else {
        s.destroy()
      }
    }
    if (this.readPaused) s.resume()
    const h = this.handler
    if (h !== undefined) {
      try {
        h.onClose(info)
      } catch {
        // the upper layers must not throw from onClose; never let it reach the event loop
      }
    }
  }
}

const NEWKEYS_PAYLOAD = Buffer.from([MSG.NEWKEYS])

/** Messages allowed while our own key exchange is in progress (RFC 4253 §7.1). */
const isTransportMessage = (type: number): boolean =>
  (type >= 1 && type <= 4) || (type >= 20 && type <= 49)

const sshString = (b: Uint8Array): Buffer => Buffer.from(new SshWriter(b.length + 4).bytes(b).toBuffer())
