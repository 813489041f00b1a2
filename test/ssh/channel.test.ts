import { describe, expect, it } from "vitest"
import { SshChannel, type ChannelHost } from "../../src/ssh/channel.ts"
import { MSG } from "../../src/ssh/constants.ts"
import { SshProtocolError } from "../../src/ssh/transport.ts"
import { SshReader } from "../../src/ssh/wire.ts"

/** A fake connection that records what the channel sends. */
class FakeHost implements ChannelHost {
  writable = true
  readonly data: Array<Buffer> = []
  readonly control: Array<Buffer> = []
  readonly waiting = new Set<SshChannel>()
  released = 0
  /** what roundTripMs() answers (undefined: no estimate) */
  roundTrip: number | undefined = undefined
  roundTripMs(): number | undefined {
    return this.roundTrip
  }
  canSendData(): boolean {
    return this.writable
  }
  sendData(_remoteId: number, data: Uint8Array, offset: number, length: number): void {
    this.data.push(Buffer.from(data.subarray(offset, offset + length)))
  }
  sendControl(payload: Buffer): void {
    this.control.push(payload)
  }
  waitWritable(channel: SshChannel): void {
    this.waiting.add(channel)
  }
  release(): void {
    this.released++
  }
  adjusts(): Array<number> {
    return this.control
      .filter((p) => p[0] === MSG.CHANNEL_WINDOW_ADJUST)
      .map((p) => {
        const r = new SshReader(p, 1)
        r.uint32()
        return r.uint32()
      })
  }
  types(): Array<number> {
    return this.control.map((p) => p[0]!)
  }
}

const make = (
  host: FakeHost,
  o: Partial<{ windowSize: number; maxWindowSize: number; remoteWindow: number; remoteMaxPacket: number }> = {}
) =>
  new SshChannel(host, {
    type: "direct-tcpip",
    localId: 1,
    remoteId: 7,
    windowSize: o.windowSize ?? 1024,
    ...(o.maxWindowSize !== undefined ? { maxWindowSize: o.maxWindowSize } : {}),
    localMaxPacket: 512,
    remoteWindow: o.remoteWindow ?? 4096,
    remoteMaxPacket: o.remoteMaxPacket ?? 100
  })

const tick = () => new Promise((r) => setImmediate(r))

describe("SshChannel flow control", () => {
  it("splits writes into packets of at most the remote max packet", async () => {
    const host = new FakeHost()
    const ch = make(host)
    await new Promise<void>((r) => ch.write(Buffer.alloc(250, 1), () => r()))
    expect(host.data.map((d) => d.length)).toEqual([100, 100, 50])
  })

  it("never sends beyond the remote window and holds the write callback until WINDOW_ADJUST", async () => {
    const host = new FakeHost()
    const ch = make(host, { remoteWindow: 150 })
    let done = false
    ch.write(Buffer.alloc(400, 2), () => {
      done = true
    })
    await tick()
    expect(host.data.reduce((n, d) => n + d.length, 0)).toBe(150)
    expect(done).toBe(false)
    ch.onRemoteWindowAdjust(200)
    await tick()
    expect(host.data.reduce((n, d) => n + d.length, 0)).toBe(350)
    expect(done).toBe(false)
    ch.onRemoteWindowAdjust(1000)
    await tick()
    expect(host.data.reduce((n, d) => n + d.length, 0)).toBe(400)
    expect(done).toBe(true)
    expect(ch.peerWindow).toBe(950)
  })

  it("waits for the transport when it cannot take data", async () => {
    const host = new FakeHost()
    host.writable = false
    const ch = make(host)
    let done = false
    ch.write(Buffer.alloc(10), () => {
      done = true
    })
    await tick()
    expect(host.waiting.has(ch)).toBe(true)
    expect(done).toBe(false)
    host.writable = true
    ch.onWritable()
    await tick()
    expect(done).toBe(true)
  })

  it("grants window only as the consumer reads (slow consumer stops the peer)", async () => {
    const host = new FakeHost()
    const ch = make(host, { windowSize: 1024 })
    ch.pause()
    for (let i = 0; i < 4; i++) ch.onRemoteData(Buffer.alloc(256, i), false)
    expect(ch.localWindow).toBe(0)
    expect(host.adjusts()).toEqual([])
    // beyond the window: protocol error
    expect(() => ch.onRemoteData(Buffer.alloc(1), false)).toThrow(SshProtocolError)
    // consume: half or more -> one adjust
    let read = 0
    let chunk: Buffer | null
    while ((chunk = ch.read() as Buffer | null) !== null) read += chunk.length
    expect(read).toBe(1024)
    expect(host.adjusts().reduce((a, b) => a + b, 0)).toBe(1024)
    expect(ch.localWindow).toBe(1024)
  })

  it("flowing consumer gets adjusts every eighth of the window (a fixed window by default)", async () => {
    const host = new FakeHost()
    const ch = make(host, { windowSize: 1024 })
    ch.on("data", () => {})
    await tick()
    for (let i = 0; i < 64; i++) ch.onRemoteData(Buffer.alloc(64), false)
    expect(host.adjusts()).toEqual(Array(32).fill(128))
    expect(ch.currentWindow).toBe(1024)
    expect(ch.localWindow).toBe(1024)
  })

  /** A peer that always sends all it may, in packets of at most 512; the windows the channel kept. */
  const sendAllItMay = (ch: SshChannel, total: number) => {
    const windows: Array<number> = []
    let sent = 0
    while (sent < total) {
      const n = Math.min(512, ch.localWindow)
      ch.onRemoteData(Buffer.alloc(n), false)
      sent += n
      if (windows.at(-1) !== ch.currentWindow) windows.push(ch.currentWindow)
    }
    return windows
  }

  it("a window that arrives within a few round trips, the reader keeping up, doubles, per window received, up to maxWindowSize", async () => {
    const host = new FakeHost()
    host.roundTrip = 50 // a far peer: every window here arrives well within 4 round trips
    const ch = make(host, { windowSize: 1024, maxWindowSize: 4096 })
    ch.on("data", () => {})
    await tick()
    expect(sendAllItMay(ch, 64 * 1024)).toEqual([1024, 2048, 4096])
    // the peer's allowance never exceeds the window we keep
    expect(ch.localWindow).toBeLessThanOrEqual(4096)
    expect(ch.localWindow).toBeGreaterThan(0)
  })

  it("on a short path (a window takes many round trips) or with no round-trip estimate, the window stays as it is", async () => {
    for (const roundTrip of [0, undefined]) {
      const host = new FakeHost()
      host.roundTrip = roundTrip
      const ch = make(host, { windowSize: 1024, maxWindowSize: 4096 })
      ch.on("data", () => {})
      await tick()
      expect(sendAllItMay(ch, 64 * 1024)).toEqual([1024])
    }
  })

  it("a reader that falls behind stops the growth and never holds more than the window", async () => {
    const host = new FakeHost()
    host.roundTrip = 50
    const ch = make(host, { windowSize: 1024, maxWindowSize: 1 << 20 })
    ch.pause()
    // fill the window, then read slowly: half of what arrives stays buffered
    for (let round = 0; round < 50; round++) {
      while (ch.localWindow > 0) ch.onRemoteData(Buffer.alloc(Math.min(256, ch.localWindow)), false)
      expect(ch.readableLength).toBeLessThanOrEqual(ch.currentWindow)
      ch.read(Math.floor(ch.readableLength / 2))
    }
    expect(ch.currentWindow).toBe(1024)
    expect(ch.readableLength).toBeLessThanOrEqual(1024)
  })

  it("rejects packets larger than our max packet", () => {
    const host = new FakeHost()
    const ch = make(host, { windowSize: 4096 })
    expect(() => ch.onRemoteData(Buffer.alloc(513), false)).toThrow(SshProtocolError)
  })

  it("extended data is discarded but counted", () => {
    const host = new FakeHost()
    const ch = make(host, { windowSize: 1024 })
    ch.onRemoteData(Buffer.alloc(512), true)
    expect(host.adjusts()).toEqual([512])
    expect(ch.readableLength).toBe(0)
  })

  it("end() sends EOF after the data; destroy() sends CLOSE; remote CLOSE releases", async () => {
    const host = new FakeHost()
    const ch = make(host)
    ch.write(Buffer.alloc(10))
    ch.end()
    await tick()
    expect(host.types()).toEqual([MSG.CHANNEL_EOF])
    ch.destroy()
    await tick()
    expect(host.types()).toEqual([MSG.CHANNEL_EOF, MSG.CHANNEL_CLOSE])
    expect(host.released).toBe(0)
    ch.onRemoteClose()
    expect(host.released).toBe(1)
  })

  it("remote EOF ends the readable side; remote CLOSE answers CLOSE and destroys after reading", async () => {
    const host = new FakeHost()
    const ch = make(host)
    const got: Array<Buffer> = []
    ch.on("data", (d: Buffer) => got.push(d))
    const ended = new Promise<void>((r) => ch.on("end", () => r()))
    const closed = new Promise<void>((r) => ch.on("close", () => r()))
    ch.onRemoteData(Buffer.from("hi"), false)
    ch.onRemoteEof()
    await ended
    expect(Buffer.concat(got).toString()).toBe("hi")
    expect(() => ch.onRemoteData(Buffer.from("x"), false)).toThrow(SshProtocolError)
    ch.onRemoteClose()
    await closed
    expect(host.types()).toEqual([MSG.CHANNEL_CLOSE])
    expect(host.released).toBe(1)
  })

  it("a write waiting for window completes silently when the peer closes", async () => {
    const host = new FakeHost()
    const ch = make(host, { remoteWindow: 0 })
    ch.resume()
    let done = false
    ch.write(Buffer.alloc(10), () => {
      done = true
    })
    await tick()
    expect(done).toBe(false)
    ch.onRemoteClose()
    await tick()
    expect(done).toBe(true)
  })
})
