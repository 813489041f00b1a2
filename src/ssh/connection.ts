/**
 * The SSH connection protocol (RFC 4254): channel multiplexing, global requests, keepalives.
 *
 * Used by both roles once user authentication has succeeded. Incoming channel opens are decided by
 * a per-role policy (the relay rejects every one; our client accepts `direct-tcpip`). Every global
 * request with want-reply is answered with REQUEST_FAILURE at once; channel requests with
 * want-reply get CHANNEL_FAILURE.
 */
import { SshChannel, type ChannelHost } from "./channel.ts"
import { DISCONNECT, MSG, OPEN_FAILURE } from "./constants.ts"
import { SshProtocolError, type CloseInfo, type Transport } from "./transport.ts"
import { SshReader, SshWriter } from "./wire.ts"

export class ChannelOpenError extends Error {
  override readonly name: string = "ChannelOpenError"
  constructor(
    readonly code: number,
    message: string
  ) {
    super(message)
  }
}

/**
 * The connection already has its maximum of channels open, being opened or closing (a channel
 * whose CHANNEL_CLOSE the peer has not answered still holds its slot).
 */
export class ChannelLimitError extends ChannelOpenError {
  override readonly name: string = "ChannelLimitError"
  constructor(limit: number) {
    super(OPEN_FAILURE.RESOURCE_SHORTAGE, `channel limit reached: ${limit} channels open or closing on this connection`)
  }
}

export class ConnectionClosedError extends Error {
  override readonly name = "ConnectionClosedError"
}

/** What to do with a channel the peer opens. */
export type ChannelOpenDecision =
  | { readonly accept: (channel: SshChannel) => void }
  | { readonly reject: number; readonly description: string }

export type ChannelOpenPolicy = (type: string, extra: Buffer) => ChannelOpenDecision

export interface ChannelLimits {
  /** our initial window per channel (default 8 MiB) */
  readonly windowSize?: number
  /**
   * what a channel's window may grow to when a whole window arrives within a few round trips
   * (a stream limited by bandwidth x delay, not by its reader or the peer); default: windowSize
   */
  readonly maxWindowSize?: number
  /** the largest CHANNEL_DATA we accept, advertised as the channel's maximum packet size (default 32 KiB) */
  readonly channelMaxPacket?: number
  /**
   * channels open at once, both directions, pending opens and unanswered closes included (default
   * 1000); a function is read at each open, so the limit can change while the connection lives
   */
  readonly maxChannels?: number | (() => number)
}

export interface KeepaliveOptions {
  readonly intervalMs: number
  readonly timeoutMs: number
}

export const DEFAULT_WINDOW_SIZE = 8 * 1024 * 1024
export const DEFAULT_CHANNEL_MAX_PACKET = 32 * 1024
export const DEFAULT_MAX_CHANNELS = 1000
/** Largest CHANNEL_DATA we ever send, whatever the peer advertises (fits any 256 KiB transport). */
const SEND_MAX_PACKET = 256 * 1024 - 4096
const MAX_WINDOW = 0xffff_ffff

interface PendingOpen {
  readonly type: string
  readonly resolve: (channel: SshChannel) => void
  readonly reject: (error: Error) => void
  timer: NodeJS.Timeout | undefined
  timedOut: boolean
  /** performance.now() when the open was sent: its answer is a round-trip sample */
  readonly sentAt: number
}

interface PendingRequest {
  readonly resolve: (ok: boolean) => void
  readonly reject: (error: Error) => void
  readonly sentAt: number
}

export class Connection implements ChannelHost {
  private readonly channels = new Map<number, SshChannel>()
  private readonly opening = new Map<number, PendingOpen>()
  private readonly requests: Array<PendingRequest> = []
  private readonly blocked = new Set<SshChannel>()
  private nextId = 0
  private closed = false
  private keepaliveTimer: NodeJS.Timeout | undefined
  readonly windowSize: number
  readonly maxWindowSize: number
  readonly maxPacket: number
  private readonly channelLimit: () => number
  /** The shortest round trip seen (a channel open or global request to its reply), ms. */
  private minRoundTripMs: number | undefined

  constructor(
    private readonly transport: Transport,
    private readonly policy: ChannelOpenPolicy,
    limits: ChannelLimits | undefined
  ) {
    this.windowSize = Math.min(MAX_WINDOW, Math.max(1024, limits?.windowSize ?? DEFAULT_WINDOW_SIZE))
    this.maxWindowSize = Math.min(MAX_WINDOW, Math.max(this.windowSize, limits?.maxWindowSize ?? 0))
    this.maxPacket = Math.max(1024, limits?.channelMaxPacket ?? DEFAULT_CHANNEL_MAX_PACKET)
    const limit = limits?.maxChannels ?? DEFAULT_MAX_CHANNELS
    this.channelLimit = typeof limit === "function" ? () => Math.max(1, limit()) : () => Math.max(1, limit)
  }

  get maxChannels(): number {
    return this.channelLimit()
  }

  /**
   * The round trip to the peer, as the shortest seen from a channel open or global request to its
   * answer (the shortest: the others include the peer's and our own scheduling delays).
   */
  roundTripMs(): number | undefined {
    return this.minRoundTripMs
  }

  private sampleRoundTrip(sentAt: number): void {
    const ms = performance.now() - sentAt
    if (this.minRoundTripMs === undefined || ms < this.minRoundTripMs) this.minRoundTripMs = ms
  }

  get channelCount(): number {
    return this.channels.size + this.opening.size
  }

  // ---------------------------------------------------------------------------------------------
  // outgoing

  /** Open a channel of `type` with `extra` type-specific data (empty for the relay's direct-tcpip). */
  openChannel(type: string, extra: Uint8Array = Buffer.alloc(0), timeoutMs?: number): Promise<SshChannel> {
    return new Promise<SshChannel>((resolve, reject) => {
      if (this.closed) return reject(new ConnectionClosedError("connection closed"))
      const limit = this.maxChannels
      if (this.channelCount >= limit) return reject(new ChannelLimitError(limit))
      const id = this.allocateId()
      const pending: PendingOpen = { type, resolve, reject, timer: undefined, timedOut: false, sentAt: performance.now() }
      if (timeoutMs !== undefined) {
        pending.timer = setTimeout(() => {
          // Keep the id reserved: a late confirmation is answered with CLOSE.
          pending.timer = undefined
          pending.timedOut = true
          reject(new ChannelOpenError(OPEN_FAILURE.CONNECT_FAILED, "channel open timed out"))
        }, timeoutMs)
      }
      this.opening.set(id, pending)
      this.transport.send(
        Buffer.from(
          new SshWriter(64 + type.length + extra.length)
            .byte(MSG.CHANNEL_OPEN)
            .string(type)
            .uint32(id)
            .uint32(this.windowSize)
            .uint32(this.maxPacket)
            .raw(extra)
            .toBuffer()
        )
      )
    })
  }

  /** Send a global request; resolves with true for REQUEST_SUCCESS, false for REQUEST_FAILURE. */
  globalRequest(name: string, data: Uint8Array = Buffer.alloc(0)): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      if (this.closed) return reject(new ConnectionClosedError("connection closed"))
      this.requests.push({ resolve, reject, sentAt: performance.now() })
      this.transport.send(
        Buffer.from(new SshWriter(32 + name.length + data.length).byte(MSG.GLOBAL_REQUEST).string(name).boolean(true).raw(data).toBuffer())
      )
    })
  }

  /** keepalive@openssh.com with want-reply; any reply counts. */
  ping(timeoutMs = 15_000): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to keepalive within ${timeoutMs} ms`)), timeoutMs)
      this.globalRequest("keepalive@openssh.com").then(
        () => {
          clearTimeout(timer)
          resolve()
        },
        (e: unknown) => {
          clearTimeout(timer)
          reject(e)
        }
      )
    })
  }

  /** Send keepalives every intervalMs; close the connection when one is not answered in timeoutMs. */
  startKeepalive(options: KeepaliveOptions): void {
    const schedule = (): void => {
      if (this.closed) return
      this.keepaliveTimer = setTimeout(() => {
        this.ping(options.timeoutMs).then(schedule, () => {
          if (!this.closed) this.transport.disconnect(DISCONNECT.CONNECTION_LOST, "keepalive timeout")
        })
      }, options.intervalMs)
      this.keepaliveTimer.unref()
    }
    schedule()
  }

  // ---------------------------------------------------------------------------------------------
  // ChannelHost

  canSendData(): boolean {
    return this.transport.canSendData()
  }

  sendData(remoteId: number, data: Uint8Array, offset: number, length: number): void {
    this.transport.sendChannelData(remoteId, data, offset, length)
  }

  sendControl(payload: Buffer): void {
    this.transport.send(payload)
  }

  waitWritable(channel: SshChannel): void {
    this.blocked.add(channel)
  }

  release(channel: SshChannel): void {
    if (this.channels.get(channel.localId) === channel) this.channels.delete(channel.localId)
    this.blocked.delete(channel)
  }

  /** The transport can take data again: let blocked channels continue (round-robin by insertion). */
  onWritable(): void {
    if (this.blocked.size === 0) return
    const list = [...this.blocked]
    this.blocked.clear()
    for (const ch of list) {
      if (!this.transport.canSendData()) {
        this.blocked.add(ch)
        continue
      }
      ch.onWritable()
    }
  }

  // ---------------------------------------------------------------------------------------------
  // incoming

  /** Handle one connection-protocol message (after authentication). */
  handle(payload: Buffer, seq: number): void {
    const type = payload[0]!
    const r = new SshReader(payload, 1)
    switch (type) {
      case MSG.GLOBAL_REQUEST: {
        r.string(1024)
        const wantReply = r.boolean()
        if (wantReply) this.transport.send(REQUEST_FAILURE)
        return
      }
      case MSG.REQUEST_SUCCESS:
      case MSG.REQUEST_FAILURE: {
        const req = this.requests.shift()
        if (req === undefined) throw new SshProtocolError("reply to a global request we did not send")
        this.sampleRoundTrip(req.sentAt)
        req.resolve(type === MSG.REQUEST_SUCCESS)
        return
      }
      case MSG.CHANNEL_OPEN:
        return this.onChannelOpen(r)
      case MSG.CHANNEL_OPEN_CONFIRMATION:
        return this.onOpenConfirmation(r)
      case MSG.CHANNEL_OPEN_FAILURE:
        return this.onOpenFailure(r)
      case MSG.CHANNEL_WINDOW_ADJUST: {
        const ch = this.channel(r.uint32())
        ch.onRemoteWindowAdjust(r.uint32())
        return
      }
      case MSG.CHANNEL_DATA: {
        const ch = this.channel(r.uint32())
        ch.onRemoteData(dataView(payload, r), false)
        return
      }
      case MSG.CHANNEL_EXTENDED_DATA: {
        const ch = this.channel(r.uint32())
        r.uint32()
        ch.onRemoteData(dataView(payload, r), true)
        return
      }
      case MSG.CHANNEL_EOF:
        this.channel(r.uint32()).onRemoteEof()
        return
      case MSG.CHANNEL_CLOSE:
        this.channel(r.uint32()).onRemoteClose()
        return
      case MSG.CHANNEL_REQUEST: {
        const ch = this.channel(r.uint32())
        r.string(1024)
        const wantReply = r.boolean()
        if (wantReply) this.transport.send(channelMessage(MSG.CHANNEL_FAILURE, ch.remoteId))
        return
      }
      case MSG.CHANNEL_SUCCESS:
      case MSG.CHANNEL_FAILURE:
        this.channel(r.uint32())
        return
    }
    if (type >= 50 && type <= 79) return // userauth messages after success are ignored (RFC 4252 §5.1)
    this.transport.sendUnimplemented(seq)
  }

  private channel(id: number): SshChannel {
    const ch = this.channels.get(id)
    if (ch === undefined) throw new SshProtocolError(`message for unknown channel ${id}`)
    return ch
  }

  private allocateId(): number {
    for (;;) {
      const id = this.nextId
      this.nextId = (this.nextId + 1) >>> 0
      if (!this.channels.has(id) && !this.opening.has(id)) return id
    }
  }

  private onChannelOpen(r: SshReader): void {
    const type = r.string(256)
    const sender = r.uint32()
    const window = r.uint32()
    const maxPacket = r.uint32()
    const extra = Buffer.from(r.raw(r.remaining))
    const reject = (code: number, description: string): void => {
      this.transport.send(
        Buffer.from(
          new SshWriter(32 + description.length)
            .byte(MSG.CHANNEL_OPEN_FAILURE)
            .uint32(sender)
            .uint32(code)
            .string(description)
            .string("")
            .toBuffer()
        )
      )
    }
    const decision = this.policy(type, extra)
    if ("reject" in decision) return reject(decision.reject, decision.description)
    if (this.channelCount >= this.maxChannels) {
      return reject(OPEN_FAILURE.RESOURCE_SHORTAGE, "too many channels")
    }
    const id = this.allocateId()
    const ch = new SshChannel(this, {
      type,
      localId: id,
      remoteId: sender,
      windowSize: this.windowSize,
      maxWindowSize: this.maxWindowSize,
      localMaxPacket: this.maxPacket,
      remoteWindow: window,
      remoteMaxPacket: Math.min(maxPacket, SEND_MAX_PACKET)
    })
    this.channels.set(id, ch)
    this.transport.send(
      Buffer.from(
        new SshWriter(20)
          .byte(MSG.CHANNEL_OPEN_CONFIRMATION)
          .uint32(sender)
          .uint32(id)
          .uint32(this.windowSize)
          .uint32(this.maxPacket)
          .toBuffer()
      )
    )
    decision.accept(ch)
  }

  private onOpenConfirmation(r: SshReader): void {
    const id = r.uint32()
    const pending = this.opening.get(id)
    if (pending === undefined) throw new SshProtocolError(`confirmation for unknown channel ${id}`)
    // Parse before taking it off `opening`: a truncated message ends the connection, whose close
    // must still find (and reject) this open.
    const sender = r.uint32()
    const window = r.uint32()
    const maxPacket = r.uint32()
    this.opening.delete(id)
    this.sampleRoundTrip(pending.sentAt)
    const ch = new SshChannel(this, {
      type: pending.type,
      localId: id,
      remoteId: sender,
      windowSize: this.windowSize,
      maxWindowSize: this.maxWindowSize,
      localMaxPacket: this.maxPacket,
      remoteWindow: window,
      remoteMaxPacket: Math.min(maxPacket, SEND_MAX_PACKET)
    })
    this.channels.set(id, ch)
    if (pending.timedOut) {
      ch.destroy()
      return
    }
    clearTimeout(pending.timer)
    pending.resolve(ch)
  }

  private onOpenFailure(r: SshReader): void {
    const id = r.uint32()
    const pending = this.opening.get(id)
    if (pending === undefined) throw new SshProtocolError(`open failure for unknown channel ${id}`)
    const code = r.uint32()
    const description = r.string(1024).replace(/[^\x20-\x7e]/g, "?")
    this.opening.delete(id)
    this.sampleRoundTrip(pending.sentAt)
    clearTimeout(pending.timer)
    pending.reject(new ChannelOpenError(code, description === "" ? `channel open failed (code ${code})` : description))
  }

  /** The transport closed: fail everything pending, end every channel. */
  onClose(info: CloseInfo): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.keepaliveTimer)
    const error = new ConnectionClosedError(`connection closed: ${info.reason}`)
    for (const p of this.opening.values()) {
      clearTimeout(p.timer)
      p.reject(error)
    }
    this.opening.clear()
    for (const req of this.requests.splice(0)) req.reject(error)
    const channels = [...this.channels.values()]
    this.channels.clear()
    this.blocked.clear()
    for (const ch of channels) ch.onConnectionClosed()
  }
}

const REQUEST_FAILURE = Buffer.from([MSG.REQUEST_FAILURE])

const channelMessage = (type: number, recipient: number): Buffer =>
  Buffer.from(new SshWriter(8).byte(type).uint32(recipient).toBuffer())

const dataView = (payload: Buffer, r: SshReader): Buffer => {
  const len = r.uint32()
  const start = r.offset
  if (start + len > payload.length) throw new SshProtocolError("truncated channel data")
  return payload.subarray(start, start + len)
}
