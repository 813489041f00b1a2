/**
 * Fuzz-style tests: random and mutated bytes fed to a live server socket at each handshake stage
 * (identification line, KEXINIT, KEXDH_INIT, after NEWKEYS, userauth, connection). The server
 * must never throw to the event loop (vitest fails the run on an uncaught exception or unhandled
 * rejection), must close every such connection, and the heap must not grow with the number of
 * hostile connections. The packet decoder is also fed random lengths in memory.
 */
import { Duplex } from "node:stream"
import { connect } from "node:net"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { algorithmLists, CLIENT_HOST_KEY_ALGORITHMS, encodeKexInit } from "../../src/ssh/algorithms.ts"
import { MSG } from "../../src/ssh/constants.ts"
import type { SshServerConnection } from "../../src/ssh/server.ts"
import { makeTestPki, rawClient, startTestServer, type TestPki, type TestServer } from "../../src/ssh/testkit.ts"
import { DEFAULT_MAX_PACKET_LENGTH, Transport } from "../../src/ssh/transport.ts"
import { publicKeySignedData } from "../../src/ssh/userauth.ts"
import { sign } from "../../src/ssh/keys.ts"
import { SshWriter } from "../../src/ssh/wire.ts"
import { mutate } from "../support/fuzzLive.ts"

setFlagsFromString("--expose_gc")
const gc = runInNewContext("gc") as () => void

type Decision = { ok: true } | { ok: false; reason: string }

const w = () => new SshWriter()

/** none-cipher packet framing */
const frame = (payload: Uint8Array): Buffer => {
  let pad = 8 - ((5 + payload.length) % 8)
  if (pad < 4) pad += 8
  return Buffer.from(
    w()
      .uint32(1 + payload.length + pad)
      .byte(pad)
      .raw(payload)
      .raw(Buffer.alloc(pad))
      .toBuffer()
  )
}

const VERSION = Buffer.from("SSH-2.0-Fuzzer\r\n")
const kexInit = (kex: string) =>
  encodeKexInit(algorithmLists(CLIENT_HOST_KEY_ALGORITHMS, { kex: [kex] }), ["ext-info-c", "kex-strict-c-v00@openssh.com"])

/** Byte flips, an optional truncation and an optional insertion, applied to a base buffer. */
const mutation = fc.record({
  flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 6 }),
  truncate: fc.option(fc.nat(), { nil: undefined }),
  insert: fc.option(fc.tuple(fc.nat(), fc.uint8Array({ maxLength: 16 })), { nil: undefined })
})

describe("fuzzing the server", () => {
  let pki: TestPki
  let srv: TestServer<Decision>
  let heapBaseline = 0

  beforeAll(async () => {
    pki = makeTestPki()
    srv = await startTestServer<Decision>({
      hostKey: { certificate: pki.hostCertificate, privateKey: pki.hostKey },
      authenticate: ({ certificate }) =>
        certificate.signatureKey.equals(pki.userCa.publicBlob) ? { ok: true } : { ok: false, reason: "CA" },
      limits: { authTimeoutMs: 5000 }
    })
  })
  afterAll(() => srv.close())

  /** Send raw bytes on a fresh socket, then half-close; resolve when the server connection ended. */
  const feed = async (chunks: ReadonlyArray<Buffer>): Promise<SshServerConnection<Decision>> => {
    const next = srv.nextConnection()
    const s = connect(srv.port, "127.0.0.1")
    s.on("error", () => {})
    s.resume()
    for (const c of chunks) s.write(c)
    s.end()
    const conn = await next
    await conn.closed
    s.destroy()
    return conn
  }

  it("identification stage: random bytes", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 600 }), fc.boolean(), async (bytes, prefixed) => {
        const conn = await feed([prefixed ? Buffer.concat([Buffer.from("SSH-2.0-"), bytes]) : Buffer.from(bytes)])
        expect(conn.isClosed).toBe(true)
      }),
      { numRuns: 80 }
    )
  })

  it("KEXINIT stage: mutated KEXINIT packets and random packets", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          mutation.map((m) => frame(mutate(kexInit("curve25519-sha256"), m))),
          mutation.map((m) => mutate(frame(kexInit("diffie-hellman-group14-sha256")), m)),
          fc.uint8Array({ minLength: 1, maxLength: 300 }).map((p) => frame(p)),
          fc.uint8Array({ maxLength: 300 }).map((p) => Buffer.from(p))
        ),
        async (packet) => {
          const conn = await feed([VERSION, packet])
          expect(conn.isClosed).toBe(true)
        }
      ),
      { numRuns: 150 }
    )
  })

  it("KEXDH_INIT stage: mutated and random public values", async () => {
    const curve = Buffer.from(w().byte(MSG.KEXDH_INIT).bytes(Buffer.alloc(32, 9)).toBuffer())
    const dh = Buffer.from(w().byte(MSG.KEXDH_INIT).mpintFromUnsigned(Buffer.alloc(256, 0x42)).toBuffer())
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          mutation.map((m) => ["curve25519-sha256", frame(mutate(curve, m))] as const),
          mutation.map((m) => ["diffie-hellman-group14-sha256", frame(mutate(dh, m))] as const),
          fc
            .uint8Array({ maxLength: 300 })
            .map((p) => ["curve25519-sha256", frame(Buffer.concat([Buffer.from([MSG.KEXDH_INIT]), p]))] as const),
          // edge values: 0, 1, p-1-ish, all ones, negative
          fc
            .constantFrom(
              Buffer.alloc(0),
              Buffer.from([1]),
              Buffer.from([0x80]),
              Buffer.alloc(256, 0xff),
              Buffer.concat([Buffer.from([0]), Buffer.alloc(256, 0xff)])
            )
            .map(
              (v) =>
                ["diffie-hellman-group14-sha256", frame(w().byte(MSG.KEXDH_INIT).uint32(v.length).raw(v).toBuffer())] as const
            )
        ),
        async ([kex, packet]) => {
          const conn = await feed([VERSION, frame(kexInit(kex)), packet])
          expect(conn.isClosed).toBe(true)
        }
      ),
      { numRuns: 120 }
    )
  })

  it("after NEWKEYS: random encrypted messages, and garbage on the socket", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(
            fc.oneof(fc.constantFrom(1, 2, 3, 4, 5, 6, 7, 20, 21, 30, 31, 50, 80, 90, 94, 98), fc.integer({ min: 0, max: 255 })),
            fc.uint8Array({ maxLength: 200 })
          ),
          { minLength: 1, maxLength: 5 }
        ),
        fc.option(fc.uint8Array({ minLength: 1, maxLength: 200 }), { nil: undefined }),
        async (messages, garbage) => {
          const next = srv.nextConnection()
          const rc = rawClient(srv.port)
          rc.socket.on("error", () => {})
          const conn = await next
          await rc.ready.catch(() => {})
          for (const [type, body] of messages) rc.send(Buffer.concat([Buffer.from([type]), body]))
          if (garbage !== undefined) rc.socket.write(garbage)
          await new Promise((r) => setImmediate(r))
          rc.transport.disconnect()
          await conn.closed
          expect(conn.isClosed).toBe(true)
        }
      ),
      { numRuns: 60 }
    )
  })

  it("userauth stage: mutated publickey requests", async () => {
    const user = "gateway-1"
    await fc.assert(
      fc.asyncProperty(mutation, fc.boolean(), async (m, signed) => {
        const next = srv.nextConnection()
        const rc = rawClient(srv.port)
        rc.socket.on("error", () => {})
        const conn = await next
        await rc.ready
        rc.send(w().byte(MSG.SERVICE_REQUEST).string("ssh-userauth").toBuffer())
        const alg = "rsa-sha2-256-cert-v01@openssh.com"
        const req = w()
          .byte(MSG.USERAUTH_REQUEST)
          .string(user)
          .string("ssh-connection")
          .string("publickey")
          .boolean(signed)
          .string(alg)
          .bytes(pki.userCertificate)
        if (signed) {
          const data = publicKeySignedData(rc.transport.sessionId!, user, "ssh-connection", alg, pki.userCertificate)
          req.bytes(sign(pki.userKey, "rsa-sha2-256", data))
        }
        rc.send(mutate(req.toBuffer(), m))
        await rc.next().catch(() => undefined) // SERVICE_ACCEPT
        // the answer, or the close; a mutation may also turn the request into something unanswered
        await Promise.race([rc.next().catch(() => undefined), new Promise((r) => setTimeout(r, 200))])
        rc.transport.disconnect()
        await conn.closed
        expect(conn.isClosed).toBe(true)
      }),
      { numRuns: 60 }
    )
  })

  it("connection stage: random connection-protocol messages after a successful login", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 80, max: 100 }), fc.uint8Array({ maxLength: 64 })), {
          minLength: 1,
          maxLength: 6
        }),
        async (messages) => {
          const next = srv.nextConnection()
          const rc = rawClient(srv.port)
          rc.socket.on("error", () => {})
          const conn = await next
          await rc.ready
          rc.send(w().byte(MSG.SERVICE_REQUEST).string("ssh-userauth").toBuffer())
          const alg = "rsa-sha2-256-cert-v01@openssh.com"
          const data = publicKeySignedData(rc.transport.sessionId!, "gateway-1", "ssh-connection", alg, pki.userCertificate)
          rc.send(
            w()
              .byte(MSG.USERAUTH_REQUEST)
              .string("gateway-1")
              .string("ssh-connection")
              .string("publickey")
              .boolean(true)
              .string(alg)
              .bytes(pki.userCertificate)
              .bytes(sign(pki.userKey, "rsa-sha2-256", data))
              .toBuffer()
          )
          await conn.authenticated
          // a channel the server opened, so channel messages can hit a real channel too
          const opening = conn.openDirectTcpip().catch(() => undefined)
          for (const [type, body] of messages) rc.send(Buffer.concat([Buffer.from([type]), body]))
          await new Promise((r) => setImmediate(r))
          rc.transport.disconnect()
          await conn.closed
          await opening
          expect(conn.isClosed).toBe(true)
        }
      ),
      { numRuns: 60 }
    )
  })

  it("the heap does not grow with the number of hostile connections", async () => {
    const round = async (n: number) => {
      for (let i = 0; i < n; i++) {
        await feed([VERSION, frame(kexInit("curve25519-sha256")), Buffer.from(`garbage ${i}`.repeat(20))])
      }
    }
    await round(30)
    gc()
    heapBaseline = process.memoryUsage().heapUsed
    await round(300)
    gc()
    const grown = process.memoryUsage().heapUsed - heapBaseline
    expect(grown).toBeLessThan(8 * 1024 * 1024)
    expect(srv.connections.every((c) => c.isClosed)).toBe(true)
  })
})

describe("packet decoder", () => {
  /** An in-memory socket: input pushed by the test, output discarded. */
  const memorySocket = () =>
    new Duplex({
      read() {},
      write(_chunk, _encoding, callback) {
        callback()
      }
    })

  it("refuses lengths over the cap (or under 5, or misaligned) at once, and waits otherwise", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 0xffffffff }), async (len) => {
        const socket = memorySocket()
        let closed = false
        const t = new Transport(socket, {
          role: "server",
          hostKey: { algorithms: ["rsa-sha2-256-cert-v01@openssh.com"], blob: Buffer.alloc(0), sign: () => Buffer.alloc(0) }
        })
        t.start({ onPacket: () => {}, onKexComplete: () => {}, onWritable: () => {}, onClose: () => (closed = true) })
        socket.push(Buffer.from("SSH-2.0-x\r\n"))
        socket.push(Buffer.from(w().uint32(len).byte(4).toBuffer()))
        await new Promise((r) => setImmediate(r))
        const valid = len >= 5 && len <= DEFAULT_MAX_PACKET_LENGTH && (len + 4) % 8 === 0
        expect(closed).toBe(!valid)
        socket.destroy()
      }),
      { numRuns: 2000 }
    )
  })

  it("buffers no more than what was received while waiting for a large packet", async () => {
    const socket = memorySocket()
    const t = new Transport(socket, {
      role: "server",
      hostKey: { algorithms: ["rsa-sha2-256-cert-v01@openssh.com"], blob: Buffer.alloc(0), sign: () => Buffer.alloc(0) }
    })
    let closed = false
    t.start({ onPacket: () => {}, onKexComplete: () => {}, onWritable: () => {}, onClose: () => (closed = true) })
    socket.push(Buffer.from("SSH-2.0-x\r\n"))
    await new Promise((r) => setImmediate(r))
    const before = process.memoryUsage().arrayBuffers
    socket.push(Buffer.from(w().uint32(DEFAULT_MAX_PACKET_LENGTH - 4).byte(4).toBuffer()))
    for (let i = 0; i < 100; i++) socket.push(Buffer.alloc(1000))
    await new Promise((r) => setImmediate(r))
    const grown = process.memoryUsage().arrayBuffers - before
    expect(closed).toBe(false)
    expect(grown).toBeLessThan(2 * 1024 * 1024)
    socket.destroy()
  })
})
