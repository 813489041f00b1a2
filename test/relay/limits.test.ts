/**
 * The relay's admission limits (src/relay/Limits.ts) against real peers on loopback: Go x/crypto
 * gateways, Node TLS clients dialing like the backend, raw TCP, and a hand-made SSH gateway (our
 * transport, userauth and channel messages written by hand) for what Go cannot do: never answer
 * CHANNEL_CLOSE. Each cap refuses exactly the excess, counts it by reason, and lets a good client
 * through afterwards. The reload on SIGHUP runs against a relay subprocess.
 */
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import type * as tls from "node:tls"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { MSG } from "../../src/ssh/constants.ts"
import { sign } from "../../src/ssh/keys.ts"
import { rawClient, type RawClient } from "../../src/ssh/testkit.ts"
import { publicKeySignedData } from "../../src/ssh/userauth.ts"
import { SshReader, SshWriter } from "../../src/ssh/wire.ts"
import { type ClientCredentials, eventually, freePort, type Harness, metricTotal, startHarness } from "../support/relayHarness.ts"

const refused = (reason: string) => metricTotal("relay_sessions_refused_total", { reason })
const connectionsRefused = (listener: string, reason: string) => metricTotal("relay_connections_refused_total", { listener, reason })

/** Everything a socket receives until it closes. */
const collect = (socket: net.Socket) =>
  new Promise<Buffer>((resolve) => {
    const chunks: Array<Buffer> = []
    socket.on("data", (c: Buffer) => chunks.push(c))
    socket.on("error", () => {})
    socket.once("close", () => resolve(Buffer.concat(chunks)))
  })

/** A live session through an echo gateway: proven by one round trip. */
const openSession = async (h: Harness, creds: ClientCredentials): Promise<tls.TLSSocket> => {
  const socket = await h.dial(creds)
  const echoed = new Promise<string>((resolve, reject) => {
    let text = ""
    socket.on("data", (c: Buffer) => {
      text += c.toString()
      if (text.length >= 4) resolve(text)
    })
    socket.once("close", () => reject(new Error("closed before the echo")))
  })
  socket.write("ping")
  expect(await echoed).toBe("ping")
  return socket
}

/** A session the relay refuses after the handshake: closed with nothing written. */
const expectRefusedSession = async (h: Harness, creds: ClientCredentials) => {
  const socket = await h.dial(creds)
  expect((await collect(socket)).length).toBe(0)
}

const closeAll = async (sockets: ReadonlyArray<net.Socket>) => {
  await Promise.all(sockets.map((s) => new Promise<void>((r) => (s.destroyed ? r() : (s.once("close", () => r()), s.destroy())))))
}

/** A raw TCP connection and what it receives until closed (the relay writes the SSH version line at once). */
const rawTcp = (port: number) => {
  const socket = net.connect(port, "127.0.0.1")
  const received: Array<Buffer> = []
  socket.on("data", (c: Buffer) => received.push(c))
  const connected = new Promise<void>((r) => socket.once("connect", () => r()))
  const closed = collect(socket)
  return { socket, connected, closed, received: () => Buffer.concat(received) }
}

describe("session caps (--max-sessions 5, --max-sessions-per-gateway 3, --max-sessions-per-org 4)", () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness({ relayFlags: { maxSessions: "5", maxSessionsPerGateway: "3", maxSessionsPerOrg: "4" } })
  })
  afterAll(() => h?.close())

  it("each cap refuses exactly the excess, counted by reason; a freed slot lets the next client through", async () => {
    const [gw1, gw2, gw3] = await Promise.all([h.quickGateway("echo"), h.quickGateway("echo"), h.quickGateway("echo")])
    const orgA = { org: "org-a" }
    const orgB = { org: "org-b" }
    const before = {
      gateway: refused("max_sessions_per_gateway"),
      org: refused("max_sessions_per_org"),
      total: refused("max_sessions")
    }
    const live: Array<tls.TLSSocket> = []
    const a1 = await h.clientCredentials(gw1.gatewayId, orgA)
    for (let i = 0; i < 3; i++) live.push(await openSession(h, a1))
    await expectRefusedSession(h, a1)
    await eventually(() => refused("max_sessions_per_gateway") === before.gateway + 1, "a per-gateway refusal")

    const a2 = await h.clientCredentials(gw2.gatewayId, orgA)
    live.push(await openSession(h, a2))
    await expectRefusedSession(h, a2)
    await eventually(() => refused("max_sessions_per_org") === before.org + 1, "a per-org refusal")

    live.push(await openSession(h, await h.clientCredentials(gw2.gatewayId, orgB)))
    const b3 = await h.clientCredentials(gw3.gatewayId, orgB)
    await expectRefusedSession(h, b3)
    await eventually(() => refused("max_sessions") === before.total + 1, "a global refusal")

    // Exactly one refusal each; then a slot is freed and the next client gets it.
    await closeAll([live.shift()!])
    const next = await openSessionWhenFree(h, b3)
    expect(refused("max_sessions_per_gateway")).toBe(before.gateway + 1)
    expect(refused("max_sessions_per_org")).toBe(before.org + 1)
    await closeAll([...live, next])
  })

  it("--disconnect-expired-tunnels off (default): a tunnel outlives its certificate and keeps serving", async () => {
    const gw = await h.quickGateway("echo", { validitySeconds: 4 })
    const expiresAt = Math.floor(Date.now() / 1000 + 4) * 1000
    await eventually(() => Date.now() > expiresAt + 1500, "the certificate's expiry (plus 1.5 s)", 10_000)
    const session = await openSession(h, await h.clientCredentials(gw.gatewayId))
    await closeAll([session])
    expect(gw.peer.lines.some((l) => l.startsWith("CLOSED"))).toBe(false)
  })
})

/** A tunnel is gone once a session to its gateway is refused as not connected (bounded). */
const awaitTunnelGone = async (h: Harness, gatewayId: string) => {
  const creds = await h.clientCredentials(gatewayId)
  const before = refused("gateway_not_connected")
  const deadline = Date.now() + 10_000
  while (refused("gateway_not_connected") === before) {
    if (Date.now() > deadline) throw new Error(`the tunnel of ${gatewayId} was never removed`)
    await expectRefusedSession(h, creds)
  }
}

/** A slot is freed when the relay has seen the close: retry (bounded) until the session opens. */
const openSessionWhenFree = async (h: Harness, creds: ClientCredentials): Promise<tls.TLSSocket> => {
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      return await openSession(h, creds)
    } catch (e) {
      if (Date.now() > deadline) throw e
    }
  }
}

describe("fair share between orgs (--max-sessions 10) and --disconnect-expired-tunnels", () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness({ relayFlags: { maxSessions: "10", disconnectExpiredTunnels: "true" } })
  })
  afterAll(() => h?.close())

  it("from 90% occupancy an org holding its share is refused (org_fair_share); a smaller org gets the last slots", async () => {
    const [gw1, gw2] = await Promise.all([h.quickGateway("echo"), h.quickGateway("echo")])
    const big = await h.clientCredentials(gw1.gatewayId, { org: "big" })
    const small = await h.clientCredentials(gw2.gatewayId, { org: "small" })
    const before = { fair: refused("org_fair_share"), total: refused("max_sessions") }
    const live: Array<tls.TLSSocket> = []
    for (let i = 0; i < 8; i++) live.push(await openSession(h, big))
    live.push(await openSession(h, small)) // 9 of 10: fair sharing applies
    await expectRefusedSession(h, big) // big holds 8 >= 10 / 2
    await eventually(() => refused("org_fair_share") === before.fair + 1, "a fair-share refusal")
    live.push(await openSession(h, small)) // small holds 1 < 5
    await expectRefusedSession(h, small)
    await eventually(() => refused("max_sessions") === before.total + 1, "a global refusal")
    await closeAll(live.splice(0, 1))
    live.push(await openSessionWhenFree(h, small))
    expect(refused("org_fair_share")).toBe(before.fair + 1)
    await closeAll(live)
  })

  it("a gateway whose certificate expires is disconnected at expiry and counted", async () => {
    const before = metricTotal("relay_tunnels_expired_total")
    const other = await h.quickGateway("echo")
    const gw = await h.quickGateway("echo", { validitySeconds: 4 })
    const expiresAt = Math.floor(Date.now() / 1000 + 4) * 1000
    const closed = await gw.peer.waitForLine(/^CLOSED/, { timeoutMs: 15_000 })
    const at = Date.now()
    expect(closed[0]).toMatch(/^CLOSED/)
    expect(at).toBeGreaterThanOrEqual(expiresAt - 1000)
    expect(at).toBeLessThan(expiresAt + 5000)
    await eventually(() => metricTotal("relay_tunnels_expired_total") === before + 1, "the expiry counter")
    // The other gateways are unaffected.
    await closeAll([await openSession(h, await h.clientCredentials(other.gatewayId))])
    expect(other.peer.lines.some((l) => l.startsWith("CLOSED"))).toBe(false)
  })
})

describe("connection caps (--max-ssh-connections 2, --max-tls-connections 3)", () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness({ relayFlags: { maxSshConnections: "2", maxTlsConnections: "3" } })
  })
  afterAll(() => h?.close())

  it("SSH: the connection over the cap is closed with zero bytes and counted; after a close, a gateway connects", async () => {
    const before = connectionsRefused("ssh", "max_connections")
    const held = [rawTcp(h.sshPort), rawTcp(h.sshPort)]
    // Accepted: the relay's version line arrives.
    await eventually(() => held.every((c) => c.received().toString().startsWith("SSH-2.0-")), "two version lines")
    const over = rawTcp(h.sshPort)
    expect((await over.closed).length).toBe(0)
    await eventually(() => connectionsRefused("ssh", "max_connections") === before + 1, "an SSH max_connections refusal")
    await closeAll(held.map((c) => c.socket))
    const gw = await h.quickGateway("echo")
    expect(gw.peer.lines.some((l) => l.startsWith("READY"))).toBe(true)
  })

  it("TLS: with three sessions live the fourth connection is closed with zero bytes; after a close, a session opens", async () => {
    const gw = await h.quickGateway("echo")
    const creds = await h.clientCredentials(gw.gatewayId)
    const before = connectionsRefused("tls", "max_connections")
    const live = [await openSession(h, creds), await openSession(h, creds), await openSession(h, creds)]
    const over = rawTcp(h.tlsPort)
    over.socket.write(Buffer.from([0x16, 0x03, 0x01]))
    expect((await over.closed).length).toBe(0)
    await eventually(() => connectionsRefused("tls", "max_connections") === before + 1, "a TLS max_connections refusal")
    await closeAll(live.splice(0, 1))
    live.push(await openSessionWhenFree(h, creds))
    expect(connectionsRefused("tls", "max_connections")).toBeGreaterThanOrEqual(before + 1)
    await closeAll(live)
  })
})

describe("accept rate (--ssh-accept-rate 1, --tls-accept-rate 1: burst 2 per source address)", () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness({
      relayFlags: { sshAcceptRate: "1", tlsAcceptRate: "1", sshHandshakeTimeout: "30s", tlsHandshakeTimeout: "30s" }
    })
  })
  afterAll(() => h?.close())

  for (const listener of ["tls", "ssh"] as const) {
    it(`${listener.toUpperCase()}: a burst of 6 from 127.0.0.1 gets at most 2 through; the rest are closed with zero bytes and counted; after refill, accepted`, async () => {
      const port = listener === "tls" ? h.tlsPort : h.sshPort
      const before = connectionsRefused(listener, "accept_rate")
      const burst = Array.from({ length: 6 }, () => rawTcp(port))
      const closedEarly = new Set<number>()
      burst.forEach((c, i) => void c.closed.then(() => closedEarly.add(i)))
      await eventually(() => connectionsRefused(listener, "accept_rate") - before >= 4, "at least 4 refusals")
      const refusals = connectionsRefused(listener, "accept_rate") - before
      await eventually(() => closedEarly.size === refusals, "the refused connections to close")
      expect(refusals).toBeLessThanOrEqual(6)
      for (const i of closedEarly) expect(burst[i]!.received().length).toBe(0)
      // The admitted ones are held open (the handshake deadline is 30 s); on SSH they got the version line.
      for (let i = 0; i < burst.length; i++) {
        if (closedEarly.has(i)) continue
        expect(burst[i]!.socket.destroyed).toBe(false)
        if (listener === "ssh") await eventually(() => burst[i]!.received().toString().startsWith("SSH-2.0-"), "a version line")
      }
      await closeAll(burst.map((c) => c.socket))
      // Refill: within a few seconds a connection is admitted again (the TLS one completes its handshake).
      const admitted = async () => {
        if (listener === "tls") {
          return h.dial(await h.clientCredentials("6d2c9a51-0000-4000-8000-00000000000a")).then(
            (s) => (s.destroy(), true),
            () => false
          )
        }
        const c = rawTcp(port)
        const ok = await Promise.race([
          c.closed.then(() => false),
          new Promise<boolean>((r) => c.socket.once("data", () => r(true)))
        ])
        c.socket.destroy()
        return ok
      }
      const deadline = Date.now() + 10_000
      while (!(await admitted())) {
        if (Date.now() > deadline) throw new Error("never admitted after the burst")
        await new Promise((r) => setTimeout(r, 200)) // one attempt per 200 ms: polling, bounded
      }
    })
  }
})

// -------------------------------------------------------------------------------------------------
// A hand-made gateway: our SSH transport, userauth and channel messages written here, so it can
// leave the relay's CHANNEL_CLOSE unanswered (Go's x/crypto always answers).

interface RawGateway {
  readonly opens: () => number
  readonly unansweredCloses: () => number
  readonly answerCloses: () => void
  readonly close: () => void
}

const w = () => new SshWriter()

const rawGateway = async (h: Harness, gatewayId: string): Promise<RawGateway> => {
  const { certificate, privateKey } = h.gatewayCertificate(gatewayId)
  const rc: RawClient = rawClient(h.sshPort)
  await rc.ready
  rc.send(w().byte(MSG.SERVICE_REQUEST).string("ssh-userauth").toBuffer())
  const algorithm = "rsa-sha2-512-cert-v01@openssh.com"
  const signed = publicKeySignedData(rc.transport.sessionId!, gatewayId, "ssh-connection", algorithm, certificate)
  rc.send(
    w().byte(MSG.USERAUTH_REQUEST).string(gatewayId).string("ssh-connection").string("publickey").boolean(true).string(algorithm).bytes(certificate)
      .bytes(sign(privateKey, "rsa-sha2-512", signed)).toBuffer()
  )
  for (;;) {
    const m = await rc.next()
    if (m[0] === MSG.USERAUTH_SUCCESS) break
    if (m[0] === MSG.USERAUTH_FAILURE) throw new Error("hand-made gateway: authentication failed")
  }
  let opens = 0
  const pendingCloses: Array<number> = []
  const relayIdOf = new Map<number, number>()
  let nextId = 0
  void (async () => {
    for (;;) {
      let m: Buffer
      try {
        m = await rc.next()
      } catch {
        return
      }
      const r = new SshReader(m, 1)
      switch (m[0]) {
        case MSG.GLOBAL_REQUEST: {
          r.string()
          if (r.boolean()) rc.send(Buffer.from([MSG.REQUEST_FAILURE]))
          break
        }
        case MSG.CHANNEL_OPEN: {
          r.string()
          const sender = r.uint32()
          const id = nextId++
          relayIdOf.set(id, sender)
          opens++
          rc.send(w().byte(MSG.CHANNEL_OPEN_CONFIRMATION).uint32(sender).uint32(id).uint32(1 << 20).uint32(32768).toBuffer())
          break
        }
        case MSG.CHANNEL_DATA: {
          // Echo.
          const id = r.uint32()
          const data = r.bytes()
          rc.send(w().byte(MSG.CHANNEL_DATA).uint32(relayIdOf.get(id)!).bytes(data).toBuffer())
          break
        }
        case MSG.CHANNEL_EOF:
          // As an echo gateway does: the client's EOF ends our side too, and the relay ends the session.
          rc.send(w().byte(MSG.CHANNEL_EOF).uint32(relayIdOf.get(r.uint32())!).toBuffer())
          break
        case MSG.CHANNEL_CLOSE:
          pendingCloses.push(r.uint32()) // left unanswered until answerCloses()
          break
      }
    }
  })()
  return {
    opens: () => opens,
    unansweredCloses: () => pendingCloses.length,
    answerCloses: () => {
      for (const id of pendingCloses.splice(0)) rc.send(w().byte(MSG.CHANNEL_CLOSE).uint32(relayIdOf.get(id)!).toBuffer())
    },
    close: () => rc.socket.destroy()
  }
}

describe("tunnels and channels (--max-tunnels 2, --max-channels-per-tunnel 3)", () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness({ relayFlags: { maxTunnels: "2", maxChannelsPerTunnel: "3" } })
  })
  afterAll(() => h?.close())

  it("a gateway that never answers CHANNEL_CLOSE holds at most 3 channel slots; the 4th session is refused (max_channels); answering frees them", async () => {
    const gatewayId = "0d5b7a3e-1111-4aaa-8bbb-000000000001"
    const gw = await rawGateway(h, gatewayId)
    const creds = await h.clientCredentials(gatewayId)
    const before = refused("max_channels")
    for (let i = 0; i < 3; i++) await closeAll([await openSession(h, creds)])
    await eventually(() => gw.unansweredCloses() === 3, "three unanswered CHANNEL_CLOSEs")
    await expectRefusedSession(h, creds)
    await eventually(() => refused("max_channels") === before + 1, "a max_channels refusal")
    expect(gw.opens()).toBe(3) // the refused session never reached the gateway
    gw.answerCloses()
    await closeAll([await openSessionWhenFree(h, creds)])
    expect(gw.opens()).toBe(4)
    gw.close()
    await awaitTunnelGone(h, gatewayId) // frees its tunnel slot for the next test
  })

  it("a third gateway is refused (max_tunnels); a stale tunnel's replacement does not count twice; a freed slot admits the next", async () => {
    const before = metricTotal("relay_tunnel_connections_total", { outcome: "max_tunnels" })
    const [a, b] = await Promise.all([h.quickGateway("echo"), h.quickGateway("echo")])
    const c = await h.quickGateway("echo", { ready: false })
    await c.peer.exited // authenticated, then closed by the relay
    expect(metricTotal("relay_tunnel_connections_total", { outcome: "max_tunnels" })).toBe(before + 1)

    // At the cap, gateway a's frozen tunnel is replaced by its reconnect: not refused as a third.
    const replacedBefore = metricTotal("relay_tunnel_connections_total", { outcome: "stale_replaced" })
    a.peer.child.kill("SIGSTOP")
    const a2 = await h.spawnPeer(a.files, "echo")
    await a2.waitForLine(/^READY/)
    await eventually(() => metricTotal("relay_tunnel_connections_total", { outcome: "stale_replaced" }) === replacedBefore + 1, "a stale replacement")
    await closeAll([await openSession(h, await h.clientCredentials(a.gatewayId))])
    expect(metricTotal("relay_tunnel_connections_total", { outcome: "max_tunnels" })).toBe(before + 1)
    a.peer.child.kill("SIGKILL")

    // b leaves: the next new gateway is admitted and serves.
    await b.peer.kill("SIGKILL")
    await awaitTunnelGone(h, b.gatewayId)
    const d = await h.quickGateway("echo")
    await closeAll([await openSession(h, await h.clientCredentials(d.gatewayId))])
    expect(metricTotal("relay_tunnel_connections_total", { outcome: "max_tunnels" })).toBe(before + 1)
  })
})

// -------------------------------------------------------------------------------------------------

describe("SIGHUP reloads --limits-file (relay subprocess)", () => {
  let h: Harness
  let dir: string
  let limitsFile: string
  let statusPort: number
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-limits-"))
    limitsFile = path.join(dir, "limits.json")
    fs.writeFileSync(limitsFile, JSON.stringify({ "max-sessions-per-gateway": 5 }))
    statusPort = await freePort()
    h = await startHarness({
      subprocess: true,
      relayArgs: [`--limits-file=${limitsFile}`, `--status-addr=127.0.0.1:${statusPort}`, "--max-sessions-per-gateway=1"]
    })
  })
  afterAll(async () => {
    await h?.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const metrics = () =>
    new Promise<string>((resolve, reject) => {
      http.get(`http://127.0.0.1:${statusPort}/metrics`, (res) => {
        let text = ""
        res.on("data", (c: Buffer) => (text += c.toString()))
        res.on("end", () => resolve(text))
      }).on("error", reject)
    })
  const series = (text: string, name: string, label: string) =>
    Number(new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} (\\d+)`, "m").exec(text)?.[1] ?? "0")

  it("the file beats the flag at start; a valid reload applies to the next session; garbage is refused, the process stays up with the old limits", async () => {
    const relay = h.relayProcess!
    // The start-up line carries the effective limits: the file's 5, not the flag's 1.
    expect(relay.output()).toMatch(/max-sessions-per-gateway=5/)
    const gw = await h.quickGateway("echo")
    const creds = await h.clientCredentials(gw.gatewayId)
    const live = [await openSession(h, creds), await openSession(h, creds), await openSession(h, creds)]

    fs.writeFileSync(limitsFile, JSON.stringify({ "max-sessions-per-gateway": 3, "session-idle-timeout": "5m" }))
    relay.kill("SIGHUP")
    await relay.waitFor(/Limits reloaded.*max-sessions-per-gateway: 5 -> 3/)
    await expectRefusedSession(h, creds) // 3 live, cap 3: the live ones stay, the next is refused
    for (const s of live) expect(s.destroyed).toBe(false)
    let text = await metrics()
    expect(series(text, "relay_sessions_refused_total", 'reason="max_sessions_per_gateway"')).toBe(1)
    expect(series(text, "relay_config_reloads_total", 'outcome="success"')).toBe(1)

    fs.writeFileSync(limitsFile, "{ not json")
    relay.kill("SIGHUP")
    await relay.waitFor(/Limits reload failed/)
    fs.writeFileSync(limitsFile, JSON.stringify({ "max-sesions": 9 }))
    relay.kill("SIGHUP")
    await relay.waitFor(/Limits reload failed[\s\S]*Limits reload failed.*max-sesions/)
    expect(relay.child.exitCode).toBe(null)
    await expectRefusedSession(h, creds) // still 3
    text = await metrics()
    expect(series(text, "relay_config_reloads_total", 'outcome="failure"')).toBe(2)
    expect(series(text, "relay_sessions_refused_total", 'reason="max_sessions_per_gateway"')).toBe(2)
    await closeAll(live.splice(0, 1))
    live.push(await openSessionWhenFree(h, creds))
    await closeAll(live)
  })
})
