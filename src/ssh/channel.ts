/**
 * `SshChannel`: one SSH channel (RFC 4254 §5) as a Node `Duplex` with window-based flow control.
 *
 * Writing: never more than the peer's window goes on the wire; a write whose data does not fit
 * keeps its callback until WINDOW_ADJUST (or until the transport can take data again after a
 * rekey / socket drain), so Node's own `write()`/`drain` backpressure reaches the producer.
 * Data is split into packets of at most the peer's maximum packet size.
 *
 * Reading: received data is pushed without copying (a view into the decrypted packet). The
 * window is replenished only as the consumer takes data out of the readable buffer, in steps of an
 * eighth of the window (so a peer far away is never idle waiting for a half-window grant), and a
 * slow consumer stops the peer instead of growing our memory: at most one window per channel is
 * ever buffered. The window starts at `windowSize` and doubles, up to `maxWindowSize`, each time
 * a whole window arrives within a few round trips to the peer while the reader keeps up: then the
 * window is what limits the stream (bandwidth x delay above it), not the reader or the peer. A
 * stream on a short path (a window takes many round trips) keeps `windowSize`; a stalled reader
 * holds at most the window it had.
 *
 * `end()` sends CHANNEL_EOF after all written data; `destroy()` sends CHANNEL_CLOSE. A remote EOF
 * ends the readable side; a remote CLOSE ends the readable side, discards any unsent data, and
 * destroys the channel once the readable side has been consumed.
 */
import { Duplex } from "node:stream"
import { MSG } from "./constants.ts"
import { SshProtocolError } from "./transport.ts"
import { SshWriter } from "./wire.ts"

/** What a channel needs from its connection. */
export interface ChannelHost {
  canSendData(): boolean
  sendData(remoteId: number, data: Uint8Array, offset: number, length: number): void
  sendControl(payload: Buffer): void
  /** The channel cannot send now; call `onWritable()` on it when the transport can take data again. */
  waitWritable(channel: SshChannel): void
  /** Both sides have sent CHANNEL_CLOSE: the local id may be reused. */
  release(channel: SshChannel): void
  /** The round trip to the peer in ms, when known (no estimate: the window never grows). */
  roundTripMs?(): number | undefined
}

export interface ChannelParams {
  readonly type: string
  readonly localId: number
  readonly remoteId: number
  /** our initial window (what the peer may send before our first WINDOW_ADJUST) */
  readonly windowSize: number
  /** the window may grow to this (default: windowSize, a fixed window) */
  readonly maxWindowSize?: number
  /** largest CHANNEL_DATA we accept */
  readonly localMaxPacket: number
  readonly remoteWindow: number
  readonly remoteMaxPacket: number
}

const MAX_WINDOW = 0xffff_ffff
/** Grant window back in steps of this fraction of the window (x/crypto grants per read, OpenSSH per 3 packets). */
const ADJUST_STEPS = 8
/**
 * A window that arrives within this many round trips is what limits its stream. Window-bound, a
 * stream moves one window per round trip plus the time to grant it back; bound by CPU or by the
 * reader, a window takes many round trips (8 MiB at 200 MiB/s is 40 ms: 40 round trips of 1 ms).
 */
const WINDOW_BOUND_ROUND_TRIPS = 4

interface PendingWrite {
  readonly chunk: Buffer
  offset: number
  readonly callback: (error?: Error | null) => void
}

export class SshChannel extends Duplex {
  readonly type: string
  readonly localId: number
  readonly remoteId: number
  private readonly windowSize: number
  private readonly maxWindowSize: number
  /** the window we currently keep open: the peer's allowance plus what sits unread in our buffer */
  private window: number
  /** `received` and the time when the current window's worth started arriving */
  private receivedAtPeriod = 0
  private periodStartedAt = performance.now()
  private readonly localMaxPacket: number
  private readonly remoteMaxPacket: number
  private remoteWindow: number
  /** total bytes received (data and extended data) */
  private received = 0
  /** total bytes granted by WINDOW_ADJUST so far */
  private granted = 0
  private pending: PendingWrite | undefined
  private sentEof = false
  private sentClose = false
  private recvEof = false
  private recvClose = false
  private released = false

  constructor(
    private readonly host: ChannelHost,
    params: ChannelParams
  ) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: Math.max(16 * 1024, Math.floor(params.windowSize / 2)),
      writableHighWaterMark: 64 * 1024
    })
    this.type = params.type
    this.localId = params.localId
    this.remoteId = params.remoteId
    this.windowSize = params.windowSize
    this.window = params.windowSize
    this.maxWindowSize = Math.min(MAX_WINDOW, Math.max(params.windowSize, params.maxWindowSize ?? 0))
    this.localMaxPacket = params.localMaxPacket
    this.remoteWindow = Math.min(params.remoteWindow, MAX_WINDOW)
    // A zero max packet would stall us forever; treat silly values as 1.
    this.remoteMaxPacket = Math.max(1, params.remoteMaxPacket)
  }

  /** Bytes the peer may still send before we grant more. */
  get localWindow(): number {
    return this.windowSize + this.granted - this.received
  }

  /** Bytes we may still send before the peer grants more. */
  get peerWindow(): number {
    return this.remoteWindow
  }

  /** True once both sides sent CHANNEL_CLOSE. */
  get isClosed(): boolean {
    return this.sentClose && this.recvClose
  }

  // ---------------------------------------------------------------------------------------------
  // from the connection

  /** @internal CHANNEL_DATA (or EXTENDED_DATA with `extended`, which is discarded). */
  onRemoteData(data: Buffer, extended: boolean): void {
    if (data.length > this.localMaxPacket) {
      throw new SshProtocolError(`channel ${this.localId}: packet of ${data.length} bytes exceeds maximum`)
    }
    if (data.length > this.localWindow) {
      throw new SshProtocolError(`channel ${this.localId}: peer sent ${data.length} bytes beyond the window`)
    }
    if (this.recvEof || this.recvClose) {
      throw new SshProtocolError(`channel ${this.localId}: data after EOF`)
    }
    // The first window is timed from its first byte, not from the open (the peer may start late).
    if (this.received === 0) this.periodStartedAt = performance.now()
    this.received += data.length
    if (extended || this.destroyed || this.sentClose) {
      // discarded data counts as consumed at once
      this.maybeAdjust()
      return
    }
    this.push(data)
    this.maybeAdjust()
  }

  /** @internal */
  onRemoteWindowAdjust(n: number): void {
    this.remoteWindow = Math.min(MAX_WINDOW, this.remoteWindow + n)
    this.flush()
  }

  /** @internal */
  onRemoteEof(): void {
    if (this.recvEof) return
    this.recvEof = true
    if (!this.destroyed) this.push(null)
  }

  /** @internal */
  onRemoteClose(): void {
    if (this.recvClose) return
    this.recvClose = true
    // Nothing more can be sent: complete a waiting write silently (like writing to a closed peer).
    const p = this.pending
    this.pending = undefined
    if (!this.sentClose) {
      this.sentClose = true
      this.host.sendControl(channelMessage(MSG.CHANNEL_CLOSE, this.remoteId))
    }
    this.release()
    if (!this.recvEof) {
      this.recvEof = true
      if (!this.destroyed) this.push(null)
    }
    p?.callback()
    if (!this.destroyed) {
      if (this.readableEnded) this.destroy()
      else this.once("end", () => this.destroy())
    }
  }

  /** @internal The transport can take data again. */
  onWritable(): void {
    this.flush()
  }

  /** @internal The connection is gone: end everything without sending. */
  onConnectionClosed(): void {
    this.sentClose = true
    this.recvClose = true
    this.released = true
    this.pending = undefined
    if (!this.recvEof) {
      this.recvEof = true
      if (!this.destroyed) this.push(null)
    }
    if (!this.destroyed) this.destroy()
  }

  // ---------------------------------------------------------------------------------------------
  // Duplex implementation

  override _read(): void {
    this.maybeAdjust()
  }

  // Every way of consuming a readable (flowing 'data', pipe, 'readable' + read(), async iteration)
  // takes buffered data out through read(); data emitted straight from push() is handled in
  // onRemoteData. Node calls _read only when it is not already waiting for a push, so _read alone
  // would miss consumption that happens while the peer is stopped by a full window.
  override read(size?: number): any {
    const chunk: unknown = super.read(size)
    if (chunk !== null) this.maybeAdjust()
    return chunk
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.sentClose || this.recvClose) {
      callback()
      return
    }
    this.pending = { chunk, offset: 0, callback }
    this.flush()
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void
  ): void {
    const all = chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk))
    this._write(all, "binary", callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.sentEof && !this.sentClose && !this.recvClose) {
      this.sentEof = true
      this.host.sendControl(channelMessage(MSG.CHANNEL_EOF, this.remoteId))
    }
    callback()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.pending = undefined
    if (!this.sentClose) {
      this.sentClose = true
      this.host.sendControl(channelMessage(MSG.CHANNEL_CLOSE, this.remoteId))
    }
    if (this.recvClose) this.release()
    callback(error)
  }

  // ---------------------------------------------------------------------------------------------

  private release(): void {
    if (this.released || !this.sentClose || !this.recvClose) return
    this.released = true
    this.host.release(this)
  }

  /** Send as much of the pending write as window, packet size and transport allow. */
  private flush(): void {
    const p = this.pending
    if (p === undefined) return
    const host = this.host
    const chunk = p.chunk
    while (p.offset < chunk.length) {
      if (this.sentClose || this.recvClose) break
      if (this.remoteWindow === 0) return
      if (!host.canSendData()) {
        host.waitWritable(this)
        return
      }
      const n = Math.min(chunk.length - p.offset, this.remoteWindow, this.remoteMaxPacket)
      host.sendData(this.remoteId, chunk, p.offset, n)
      p.offset += n
      this.remoteWindow -= n
    }
    this.pending = undefined
    p.callback()
  }

  /** The window we keep open now (grows up to maxWindowSize). */
  get currentWindow(): number {
    return this.window
  }

  /**
   * Top the peer's allowance back up to `window` minus what our reader has not taken yet, once an
   * eighth of the window is due.
   */
  private maybeAdjust(): void {
    if (this.recvEof || this.sentClose) return
    const buffered = this.readableLength
    let grant = this.window - this.localWindow - buffered
    if (grant < this.window / ADJUST_STEPS || grant <= 0) return
    if (this.window < this.maxWindowSize && this.received - this.receivedAtPeriod >= this.window) {
      // A whole window arrived: within a few round trips, with the reader keeping up, the window is
      // what limits this stream, so it grows (memory stays bounded by maxWindowSize, and a reader
      // that falls behind stops the growth).
      const now = performance.now()
      const roundTrip = this.host.roundTripMs?.()
      if (
        roundTrip !== undefined &&
        now - this.periodStartedAt < WINDOW_BOUND_ROUND_TRIPS * roundTrip &&
        buffered <= this.window / ADJUST_STEPS
      ) {
        const extra = Math.min(this.window, this.maxWindowSize - this.window)
        this.window += extra
        grant += extra
      }
      this.receivedAtPeriod = this.received
      this.periodStartedAt = now
    }
    this.granted += grant
    this.host.sendControl(
      Buffer.from(new SshWriter(12).byte(MSG.CHANNEL_WINDOW_ADJUST).uint32(this.remoteId).uint32(grant).toBuffer())
    )
  }
}

const channelMessage = (type: number, recipient: number): Buffer =>
  Buffer.from(new SshWriter(8).byte(type).uint32(recipient).toBuffer())
