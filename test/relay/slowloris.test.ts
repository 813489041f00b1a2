/**
 * Slow-loris on both ports: peers that trickle or stall their handshake are closed at
 * --ssh-handshake-timeout / --tls-handshake-timeout (counted as handshake_timeout refusals), while
 * a good gateway connects and a good session flows next to them.
 */
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { algorithmLists, CLIENT_HOST_KEY_ALGORITHMS, encodeKexInit } from "../../src/ssh/algorithms.ts"
import { MSG } from "../../src/ssh/constants.ts"
import { rawClient } from "../../src/ssh/testkit.ts"
import { SshWriter } from "../../src/ssh/wire.ts"
import { eventually, type Harness, metricTotal, startHarness } from "../support/relayHarness.ts"

const SSH_TIMEOUT_MS = 3_000
const TLS_TIMEOUT_MS = 2_000

let h: Harness
beforeAll(async () => {
  h = await startHarness({ relayFlags: { sshHandshakeTimeout: `${SSH_TIMEOUT_MS}ms`, tlsHandshakeTimeout: `${TLS_TIMEOUT_MS}ms` } })
})
afterAll(() => h?.close())

const timeouts = (listener: "ssh" | "tls") => metricTotal("relay_connections_refused_total", { listener, reason: "handshake_timeout" })

interface Slow {
  readonly received: () => Buffer
  /** Resolves with the time from connect to close. */
  readonly closedAfter: Promise<number>
  readonly isClosed: () => boolean
}

/** A TCP client that sends `chunks[0]` at connect, then one more chunk every `everyMs`, until closed. */
const trickle = (port: number, chunks: ReadonlyArray<Buffer>, everyMs = 1_000): Slow => {
  const socket = net.connect(port, "127.0.0.1")
  const received: Array<Buffer> = []
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let next = 0
  const started = Date.now()
  socket.on("data", (c: Buffer) => received.push(c))
  socket.on("error", () => {})
  socket.once("connect", () => {
    const send = () => {
      if (next < chunks.length && !socket.destroyed) socket.write(chunks[next++]!)
    }
    send()
    timer = setInterval(send, everyMs)
  })
  const closedAfter = new Promise<number>((resolve) =>
    socket.once("close", () => {
      closed = true
      clearInterval(timer)
      resolve(Date.now() - started)
    })
  )
  return { received: () => Buffer.concat(received), closedAfter, isClosed: () => closed }
}

const frame = (payload: Buffer): Buffer => {
  let pad = 8 - ((5 + payload.length) % 8)
  if (pad < 4) pad += 8
  return Buffer.from(new SshWriter().uint32(1 + payload.length + pad).byte(pad).raw(payload).raw(Buffer.alloc(pad)).toBuffer())
}

describe("slow-loris", () => {
  it("trickled and stalled handshakes on both ports are closed at their deadline and counted; a good gateway and session work meanwhile", async () => {
    const before = { ssh: timeouts("ssh"), tls: timeouts("tls") }
    const version = Buffer.from("SSH-2.0-slowloris\r\n")
    const kexInit = frame(encodeKexInit(algorithmLists(CLIENT_HOST_KEY_ALGORITHMS, undefined), []))
    const slow = {
      // The version line one byte per second.
      versionTrickle: Array.from({ length: 3 }, () => trickle(h.sshPort, [...version].map((b) => Buffer.from([b])))),
      // The version line and KEXINIT, then nothing: stopped in the middle of the key exchange.
      midKex: Array.from({ length: 3 }, () => trickle(h.sshPort, [Buffer.concat([version, kexInit])])),
      // Half a ClientHello (a record announcing 512 bytes, 100 sent), then nothing.
      halfHello: Array.from({ length: 3 }, () =>
        trickle(h.tlsPort, [Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), Buffer.alloc(89, 7)])]))
    }
    // Key exchange done, userauth service accepted, then silence: never authenticates.
    const started = Date.now()
    const idle = rawClient(h.sshPort)
    await idle.ready
    idle.send(new SshWriter().byte(MSG.SERVICE_REQUEST).string("ssh-userauth").toBuffer())
    expect((await idle.next())[0]).toBe(MSG.SERVICE_ACCEPT)
    const idleClosedAfter = idle.closed.then((info) => ({ ms: Date.now() - started, info }))

    // Meanwhile: a good gateway connects and a session flows through it.
    const gw = await h.quickGateway("echo")
    const session = await h.dialRelay(gw.gatewayId)
    const echoed = new Promise<string>((resolve) => {
      let text = ""
      session.on("data", (c: Buffer) => {
        text += c.toString()
        if (text.length >= 5) resolve(text)
      })
    })
    session.write("hello")
    expect(await echoed).toBe("hello")
    session.destroy()
    const all = [...slow.versionTrickle, ...slow.midKex, ...slow.halfHello]
    const stillHanging = all.filter((s) => !s.isClosed()).length

    for (const s of [...slow.versionTrickle, ...slow.midKex]) {
      const ms = await s.closedAfter
      expect(ms).toBeGreaterThanOrEqual(SSH_TIMEOUT_MS - 100)
      expect(ms).toBeLessThan(SSH_TIMEOUT_MS + 3_000)
      expect(s.received().toString()).toMatch(/^SSH-2\.0-/) // the relay's version line (and KEXINIT), nothing after
    }
    for (const s of slow.halfHello) {
      const ms = await s.closedAfter
      expect(ms).toBeGreaterThanOrEqual(TLS_TIMEOUT_MS - 100)
      expect(ms).toBeLessThan(TLS_TIMEOUT_MS + 3_000)
      expect(s.received().length).toBe(0) // never a byte from the TLS port
    }
    const { ms, info } = await idleClosedAfter
    expect(info.reason).toBe("authentication timeout")
    expect(ms).toBeLessThan(SSH_TIMEOUT_MS + 3_000)

    await eventually(() => timeouts("ssh") === before.ssh + 7, "7 SSH handshake timeouts")
    await eventually(() => timeouts("tls") === before.tls + 3, "3 TLS handshake timeouts")
    // They were all still hanging while the good gateway and session did their work.
    expect(stillHanging).toBe(all.length)
    expect(gw.peer.lines.some((l) => l.startsWith("CLOSED"))).toBe(false)
  })
})
