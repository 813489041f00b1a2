/**
 * The server driven with hand-made messages: user authentication rules (RFC 4252, protocol.md
 * §4.1 checklist 5-17 with the relay's certPolicy), connection-layer answers, and transport rules
 * (version exchange, strict KEX) on a raw socket.
 */
import { connect, type Socket } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { algorithmLists, CLIENT_HOST_KEY_ALGORITHMS, encodeKexInit } from "../../src/ssh/algorithms.ts"
import { checkGatewayCertificate, type CertificateVerdict } from "../../src/ssh/certPolicy.ts"
import { CERT_TYPE_HOST } from "../../src/ssh/certs.ts"
import { DISCONNECT, MSG } from "../../src/ssh/constants.ts"
import { generateSshKey, sign, type SignatureAlgorithm, type SshPrivateKey } from "../../src/ssh/keys.ts"
import type { SshServerConnection } from "../../src/ssh/server.ts"
import {
  issueCertificate,
  makeTestPki,
  rawClient,
  startTestServer,
  type RawClient,
  type TestPki,
  type TestServer
} from "../../src/ssh/testkit.ts"
import { publicKeySignedData } from "../../src/ssh/userauth.ts"
import { SshReader, SshWriter } from "../../src/ssh/wire.ts"

const RELAY = "relay1"
const w = () => new SshWriter()

const parseFailure = (b: Buffer) => {
  expect(b[0]).toBe(MSG.USERAUTH_FAILURE)
  const r = new SshReader(b, 1)
  return { methods: r.nameList(), partial: r.boolean() }
}

describe("server protocol rules", () => {
  let pki: TestPki
  let srv: TestServer<CertificateVerdict>
  const conns: Array<SshServerConnection<CertificateVerdict>> = []

  beforeAll(async () => {
    pki = makeTestPki({ userKeyId: `client-${RELAY}`, user: "gateway-1" })
    srv = await startTestServer<CertificateVerdict>(
      {
        hostKey: { certificate: pki.hostCertificate, privateKey: pki.hostKey },
        authenticate: ({ username, certificate }) =>
          checkGatewayCertificate({
            username,
            certificate,
            relayName: RELAY,
            clientCaPublicKey: pki.userCa.publicBlob,
            now: new Date()
          })
      },
      (c) => conns.push(c)
    )
  })
  afterAll(() => srv.close())

  /** A raw client past the key exchange with the userauth service accepted. */
  const userauthClient = async (): Promise<RawClient> => {
    const rc = rawClient(srv.port)
    await rc.ready
    rc.send(w().byte(MSG.SERVICE_REQUEST).string("ssh-userauth").toBuffer())
    const accept = await rc.next()
    expect(accept[0]).toBe(MSG.SERVICE_ACCEPT)
    expect(new SshReader(accept, 1).string()).toBe("ssh-userauth")
    return rc
  }

  const request = (rc: RawClient, user: string, method: string, rest: (x: SshWriter) => SshWriter = (x) => x) =>
    rc.send(rest(w().byte(MSG.USERAUTH_REQUEST).string(user).string("ssh-connection").string(method)).toBuffer())

  const publickey = (
    rc: RawClient,
    o: { user?: string; algorithm: string; blob: Buffer; signWith?: SshPrivateKey; signatureAlgorithm?: SignatureAlgorithm }
  ) => {
    const user = o.user ?? "gateway-1"
    request(rc, user, "publickey", (x) => {
      x.boolean(o.signWith !== undefined).string(o.algorithm).bytes(o.blob)
      if (o.signWith !== undefined) {
        const data = publicKeySignedData(rc.transport.sessionId!, user, "ssh-connection", o.algorithm, o.blob)
        x.bytes(sign(o.signWith, o.signatureAlgorithm ?? sigAlgOf(o.algorithm), data))
      }
      return x
    })
  }
  const sigAlgOf = (alg: string): SignatureAlgorithm =>
    alg.startsWith("rsa-sha2-512")
      ? "rsa-sha2-512"
      : alg.startsWith("rsa-sha2-256")
        ? "rsa-sha2-256"
        : alg.startsWith("ssh-ed25519")
          ? "ssh-ed25519"
          : "ssh-rsa"

  describe("user authentication", () => {
    it("none, password, keyboard-interactive get FAILURE listing only publickey; the 3rd counted failure disconnects", async () => {
      const rc = await userauthClient()
      request(rc, "gateway-1", "none")
      expect(parseFailure(await rc.next())).toEqual({ methods: ["publickey"], partial: false })
      request(rc, "gateway-1", "password", (x) => x.boolean(false).string("hunter2"))
      expect(parseFailure(await rc.next())).toEqual({ methods: ["publickey"], partial: false })
      request(rc, "gateway-1", "keyboard-interactive", (x) => x.string("").string(""))
      expect(parseFailure(await rc.next())).toEqual({ methods: ["publickey"], partial: false })
      request(rc, "gateway-1", "hostbased", (x) => x.string("ssh-rsa").bytes(pki.userKey.publicBlob))
      const closed = await rc.closed
      expect(closed).toMatchObject({ by: "peer", code: DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE })
      expect(closed.reason).toBe("too many authentication failures")
    })

    it("only the initial none is free", async () => {
      const rc = await userauthClient()
      for (let i = 0; i < 3; i++) {
        request(rc, "gateway-1", "none")
        parseFailure(await rc.next())
      }
      request(rc, "gateway-1", "none")
      expect((await rc.closed).code).toBe(DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE)
    })

    it("PK_OK exactly when the signed request is accepted, for every certificate case and algorithm", async () => {
      const otherCa = generateSshKey("ssh-rsa")
      const now = BigInt(Math.floor(Date.now() / 1000))
      const good = { keyId: `client-${RELAY}`, principals: ["gateway-1", "gw-name"] }
      const cases: Array<[string, Buffer, boolean]> = [
        ["valid org cert", issueCertificate(pki.userCa, pki.userKey, good), true],
        ["valid instance cert", issueCertificate(pki.userCa, pki.userKey, { ...good, principals: ["gateway-1"] }), true],
        ["other CA", issueCertificate(otherCa, pki.userKey, good), false],
        ["host cert", issueCertificate(pki.userCa, pki.userKey, { ...good, certType: CERT_TYPE_HOST }), false],
        ["key id", issueCertificate(pki.userCa, pki.userKey, { ...good, keyId: "client-other" }), false],
        ["principal", issueCertificate(pki.userCa, pki.userKey, { ...good, principals: ["gateway-2"] }), false],
        ["empty principals", issueCertificate(pki.userCa, pki.userKey, { ...good, principals: [] }), false],
        ["empty first principal", issueCertificate(pki.userCa, pki.userKey, { ...good, principals: ["", "gateway-1"] }), false],
        ["expired", issueCertificate(pki.userCa, pki.userKey, { ...good, validAfter: 0n, validBefore: now - 60n }), false],
        ["not yet valid", issueCertificate(pki.userCa, pki.userKey, { ...good, validAfter: now + 3600n }), false],
        [
          "critical option",
          issueCertificate(pki.userCa, pki.userKey, {
            ...good,
            criticalOptions: [["force-command", w().string("/bin/true").toBuffer()]]
          }),
          false
        ],
        [
          "source-address is skipped (as Go does)",
          issueCertificate(pki.userCa, pki.userKey, {
            ...good,
            criticalOptions: [["source-address", w().string("127.0.0.1/32").toBuffer()]]
          }),
          true
        ]
      ]
      const algorithms = ["rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com"]
      for (const [name, blob, expected] of cases) {
        for (const algorithm of algorithms) {
          const rc = await userauthClient()
          publickey(rc, { algorithm, blob })
          const query = await rc.next()
          expect([name, algorithm, query[0]]).toEqual([name, algorithm, expected ? MSG.USERAUTH_PK_OK : MSG.USERAUTH_FAILURE])
          if (expected) {
            const r = new SshReader(query, 1)
            expect(r.string()).toBe(algorithm)
            expect(Buffer.from(r.bytes()).equals(blob)).toBe(true)
          }
          publickey(rc, { algorithm, blob, signWith: pki.userKey })
          const signed = await rc.next()
          expect([name, algorithm, signed[0]]).toEqual([name, algorithm, expected ? MSG.USERAUTH_SUCCESS : MSG.USERAUTH_FAILURE])
          rc.transport.disconnect()
        }
      }
    })

    it("refuses raw keys, mismatched algorithms, wrong signature algorithms and garbage blobs", async () => {
      const cert = issueCertificate(pki.userCa, pki.userKey, { keyId: `client-${RELAY}`, principals: ["gateway-1"] })
      const rc = await userauthClient()
      // raw key: query and signed
      publickey(rc, { algorithm: "rsa-sha2-256", blob: pki.userKey.publicBlob })
      expect((await rc.next())[0]).toBe(MSG.USERAUTH_FAILURE)
      publickey(rc, { algorithm: "rsa-sha2-256", blob: pki.userKey.publicBlob, signWith: pki.userKey })
      expect((await rc.next())[0]).toBe(MSG.USERAUTH_FAILURE)
      // announced rsa-sha2-256-cert, signed with rsa-sha2-512
      publickey(rc, {
        algorithm: "rsa-sha2-256-cert-v01@openssh.com",
        blob: cert,
        signWith: pki.userKey,
        signatureAlgorithm: "rsa-sha2-512"
      })
      expect((await rc.closed).code).toBe(DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE)
      const rc2 = await userauthClient()
      publickey(rc2, { algorithm: "ssh-ed25519-cert-v01@openssh.com", blob: cert })
      expect((await rc2.next())[0]).toBe(MSG.USERAUTH_FAILURE)
      publickey(rc2, { algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: Buffer.from("not a certificate") })
      expect((await rc2.next())[0]).toBe(MSG.USERAUTH_FAILURE)
      // a certificate signed by its own key (Go's relay would accept it; we require the client CA)
      const self = issueCertificate(pki.userKey, pki.userKey, { keyId: `client-${RELAY}`, principals: ["gateway-1"] })
      publickey(rc2, { algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: self })
      expect((await rc2.closed).code).toBe(DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE)
    })

    it("caps authentication requests per connection even when they are all PK_OK queries", async () => {
      const rc = await userauthClient()
      for (let i = 0; i < 20; i++) {
        publickey(rc, { algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: pki.userCertificate })
        expect((await rc.next())[0]).toBe(MSG.USERAUTH_PK_OK)
      }
      publickey(rc, { algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: pki.userCertificate })
      expect((await rc.closed).code).toBe(DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE)
    })

    it("connection-layer messages before authentication are a protocol error", async () => {
      for (const payload of [
        w().byte(MSG.GLOBAL_REQUEST).string("keepalive@openssh.com").boolean(true).toBuffer(),
        w().byte(MSG.CHANNEL_OPEN).string("session").uint32(0).uint32(1024).uint32(1024).toBuffer(),
        w().byte(MSG.USERAUTH_SUCCESS).toBuffer()
      ]) {
        const rc = await userauthClient()
        rc.send(payload)
        expect((await rc.closed).code).toBe(DISCONNECT.PROTOCOL_ERROR)
      }
      // USERAUTH_REQUEST before SERVICE_REQUEST
      const rc = rawClient(srv.port)
      await rc.ready
      request(rc, "gateway-1", "none")
      expect((await rc.closed).code).toBe(DISCONNECT.PROTOCOL_ERROR)
    })

    it("limits client-initiated re-keying before authentication", async () => {
      const rc = rawClient(srv.port)
      await rc.ready
      for (let i = 2; i <= 3; i++) {
        expect(rc.transport.rekey()).toBe(true)
        for (let j = 0; j < 500 && rc.transport.kexCount < i; j++) await new Promise((r) => setTimeout(r, 2))
        expect(rc.transport.kexCount).toBe(i)
      }
      rc.transport.rekey()
      const closed = await rc.closed
      expect(closed).toMatchObject({ by: "peer", code: DISCONNECT.PROTOCOL_ERROR })
      expect(closed.reason).toBe("too many key exchanges before authentication")
    })

    it("unknown services get SERVICE_NOT_AVAILABLE", async () => {
      const rc = rawClient(srv.port)
      await rc.ready
      rc.send(w().byte(MSG.SERVICE_REQUEST).string("ssh-connection").toBuffer())
      expect((await rc.closed).code).toBe(DISCONNECT.SERVICE_NOT_AVAILABLE)
      const rc2 = await userauthClient()
      rc2.send(w().byte(MSG.USERAUTH_REQUEST).string("gateway-1").string("ssh-agent").string("none").toBuffer())
      expect((await rc2.closed).code).toBe(DISCONNECT.SERVICE_NOT_AVAILABLE)
    })

    it("server-sig-algs lists rsa-sha2-256 and rsa-sha2-512 for an ext-info-c client", async () => {
      const rc = await userauthClient()
      expect(rc.transport.serverSigAlgs).toEqual(["rsa-sha2-256", "rsa-sha2-512", "ssh-rsa", "ssh-ed25519"])
      rc.transport.disconnect()
    })
  })

  describe("after authentication", () => {
    const loggedIn = async () => {
      const rc = await userauthClient()
      publickey(rc, { algorithm: "rsa-sha2-256-cert-v01@openssh.com", blob: pki.userCertificate, signWith: pki.userKey })
      expect((await rc.next())[0]).toBe(MSG.USERAUTH_SUCCESS)
      return rc
    }

    it("answers global requests promptly, ignores further userauth, answers unknown messages with UNIMPLEMENTED", async () => {
      const rc = await loggedIn()
      const conn = conns.at(-1)!
      expect((await conn.authenticated).decision).toEqual({
        ok: true,
        identity: { gatewayId: "gateway-1", gatewayName: "" }
      })
      for (const name of ["keepalive@openssh.com", "tcpip-forward", "whatever@example.com"]) {
        const t0 = performance.now()
        rc.send(w().byte(MSG.GLOBAL_REQUEST).string(name).boolean(true).string("0.0.0.0").uint32(0).toBuffer())
        expect((await rc.next())[0]).toBe(MSG.REQUEST_FAILURE)
        expect(performance.now() - t0).toBeLessThan(1000)
      }
      // without want-reply: no answer (the next answer is for the following request)
      rc.send(w().byte(MSG.GLOBAL_REQUEST).string("keepalive@openssh.com").boolean(false).toBuffer())
      request(rc, "gateway-1", "none") // ignored
      rc.send(Buffer.from([150, 1, 2, 3])) // answered with UNIMPLEMENTED (our raw transport swallows it)
      rc.send(w().byte(MSG.GLOBAL_REQUEST).string("keepalive@openssh.com").boolean(true).toBuffer())
      expect((await rc.next())[0]).toBe(MSG.REQUEST_FAILURE) // still up, and nothing else came in between
      // a server-opened channel and a CHANNEL_REQUEST with want-reply
      const opening = conn.openDirectTcpip()
      const open = await rc.next()
      expect(open[0]).toBe(MSG.CHANNEL_OPEN)
      const r = new SshReader(open, 1)
      expect(r.string()).toBe("direct-tcpip")
      const id = r.uint32()
      r.uint32()
      r.uint32()
      expect(r.remaining).toBe(0) // empty type-specific data
      rc.send(w().byte(MSG.CHANNEL_OPEN_CONFIRMATION).uint32(id).uint32(77).uint32(65536).uint32(32768).toBuffer())
      const ch = await opening
      rc.send(w().byte(MSG.CHANNEL_REQUEST).uint32(id).string("exec").boolean(true).string("ls").toBuffer())
      const fail = await rc.next()
      expect([fail[0], fail.readUInt32BE(1)]).toEqual([MSG.CHANNEL_FAILURE, 77])
      // data beyond our window is a protocol error
      ch.pause()
      rc.send(w().byte(MSG.CHANNEL_DATA).uint32(id).bytes(Buffer.alloc(40000)).toBuffer())
      expect((await rc.closed).code).toBe(DISCONNECT.PROTOCOL_ERROR)
    })

    it("a message for an unknown channel is a protocol error", async () => {
      const rc = await loggedIn()
      rc.send(w().byte(MSG.CHANNEL_DATA).uint32(12345).bytes(Buffer.from("x")).toBuffer())
      expect((await rc.closed).code).toBe(DISCONNECT.PROTOCOL_ERROR)
    })
  })

  describe("transport rules on a raw socket", () => {
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
    const kexInit = (markers: Array<string>) =>
      encodeKexInit(algorithmLists(CLIENT_HOST_KEY_ALGORITHMS, { kex: ["curve25519-sha256"] }), markers)

    /** Write bytes, collect what the server sends until it closes (or the guard fires). */
    const exchange = (chunks: Array<Buffer>, guardMs = 3000) =>
      new Promise<{ data: Buffer; closedByServer: boolean }>((resolve) => {
        const s: Socket = connect(srv.port, "127.0.0.1")
        const got: Array<Buffer> = []
        s.on("data", (d: Buffer) => got.push(d))
        s.on("error", () => {})
        const timer = setTimeout(() => {
          s.destroy()
          resolve({ data: Buffer.concat(got), closedByServer: false })
        }, guardMs)
        s.on("close", () => {
          clearTimeout(timer)
          resolve({ data: Buffer.concat(got), closedByServer: true })
        })
        for (const c of chunks) s.write(c)
      })

    it("sends its identification first and accepts CR LF or LF line ends", async () => {
      for (const line of ["SSH-2.0-Test\r\n", "SSH-2.0-Test\n", "SSH-1.99-Old\r\n"]) {
        const r = await exchange([Buffer.from(line), frame(kexInit([]))], 300)
        expect(r.data.toString("latin1")).toMatch(/^SSH-2\.0-InfisicalRelay_1\.0\r\n/)
        expect(r.closedByServer).toBe(false) // waiting for KEXDH_INIT
      }
    })

    it("drops non-SSH clients, SSH-1, over-long identification lines", async () => {
      for (const input of [
        "GET / HTTP/1.1\r\n\r\n",
        "SSH-1.5-Old\r\n",
        "SSH-2.0-" + "x".repeat(300) + "\r\n",
        "SSH-2.0-" + "x".repeat(300),
        "\x00\x01\x02\x03"
      ]) {
        const r = await exchange([Buffer.from(input, "latin1")])
        expect(r.closedByServer).toBe(true)
      }
    })

    it("strict KEX: any packet before KEXINIT is fatal; without strict KEX an IGNORE is fine", async () => {
      const ignore = frame(Buffer.from([MSG.IGNORE, 0, 0, 0, 0]))
      const strict = await exchange([
        Buffer.from("SSH-2.0-Test\r\n"),
        ignore,
        frame(kexInit(["ext-info-c", "kex-strict-c-v00@openssh.com"]))
      ])
      expect(strict.closedByServer).toBe(true)
      const lenient = await exchange([Buffer.from("SSH-2.0-Test\r\n"), ignore, frame(kexInit(["ext-info-c"]))], 300)
      expect(lenient.closedByServer).toBe(false)
    })

    it("strict KEX: a non-kex message during the initial kex is fatal", async () => {
      const r = await exchange([
        Buffer.from("SSH-2.0-Test\r\n"),
        frame(kexInit(["kex-strict-c-v00@openssh.com"])),
        frame(Buffer.from([MSG.IGNORE, 0, 0, 0, 0]))
      ])
      expect(r.closedByServer).toBe(true)
      const r2 = await exchange([
        Buffer.from("SSH-2.0-Test\r\n"),
        frame(kexInit([])),
        frame(w().byte(MSG.SERVICE_REQUEST).string("ssh-userauth").toBuffer())
      ])
      expect(r2.closedByServer).toBe(true)
    })

    it("refuses a packet length over the cap at once, without waiting for the bytes", async () => {
      const header = w().uint32(10 * 1024 * 1024).byte(4).toBuffer()
      const t0 = performance.now()
      const r = await exchange([Buffer.from("SSH-2.0-Test\r\n"), Buffer.from(header)])
      expect(r.closedByServer).toBe(true)
      expect(performance.now() - t0).toBeLessThan(2000)
    })
  })
})
