/**
 * The data plane end to end, the way production runs: a backend-style client (outer mTLS to the
 * relay, inner TLS to the gateway) through our relay to a Go x/crypto/ssh gateway peer configured
 * like Infisical's gateway (checklist 30-37), and the relay's counters (src/observability/Metrics.ts,
 * read with Metric.value from the relay running in this process) moving with it.
 */
import { createHash } from "node:crypto"
import type * as tls from "node:tls"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readAll, sourceStreamBytes, type PeerProcess } from "../support/goPeers.ts"
import {
  heartbeatProbes,
  sessionBytes,
  sessionsActive,
  sessionsRefused,
  sessionsTotal,
  tagged,
  tunnelConnections,
  tunnelsConnected
} from "../../src/observability/Metrics.ts"
import { ZERO_UUID } from "../../src/pki/profile.ts"
import { eventually, type Harness, metricTotal, metricValue, startHarness } from "../support/relayHarness.ts"

let h: Harness
beforeAll(async () => {
  h = await startHarness()
})
afterAll(() => h?.close())

describe("data plane against a Go gateway", () => {
  it("37. a backend-style nested handshake with ALPN infisical-ping gets PONG", async () => {
    const { gatewayId } = await h.connectGateway("ping-gw", "tls-ping")
    // The control plane's gateway heartbeat: outer TLS to the relay, inner TLS to the gateway, PONG.
    await h.cp((c) => c.pingGateway(gatewayId))
    const gateways = await h.cp((c) => c.gateways)
    expect(gateways.find((g) => g.id === gatewayId)?.heartbeat).not.toBeNull()
  })

  it("30. a gateway that is not connected: the handshake completes, then a close with zero bytes written", async () => {
    const before = refused("gateway_not_connected")
    for (const maxVersion of ["TLSv1.2", "TLSv1.3"] as const) {
      const socket = await h.dial(await h.clientCredentials("6d2c9a51-0000-4000-8000-000000000000"), { maxVersion })
      const received = await readAll(socket)
      expect(received.length).toBe(0)
    }
    await eventually(() => refused("gateway_not_connected") === before + 2, "two refusals")
  })

  it("a TLS session offered back is never resumed: every connection's client certificate is verified afresh", async () => {
    const { gatewayId } = await h.connectGateway("resume-gw", "echo")
    const credentials = await h.clientCredentials(gatewayId)
    for (const maxVersion of ["TLSv1.2", "TLSv1.3"] as const) {
      const first = await h.dial(credentials, { maxVersion })
      // What a client would offer back: its session (1.2), or the last ticket it got (1.3).
      let session: Buffer | undefined = first.getSession()
      first.on("session", (ticket: Buffer) => (session = ticket))
      first.end("x")
      await readAll(first)
      expect(session, `${maxVersion}: a session to offer`).toBeInstanceOf(Buffer)
      const second = await h.dial(credentials, { maxVersion, session: session! })
      expect(second.isSessionReused(), `${maxVersion}: resumed`).toBe(false)
      second.end("y")
      expect((await readAll(second)).toString()).toBe("y")
    }
  })

  it("33. bytes arrive unchanged both ways (16 MiB through the echo gateway)", async () => {
    const { gatewayId } = await h.connectGateway("echo-gw", "echo")
    const socket = await h.dialRelay(gatewayId)
    const payload = Buffer.alloc(16 * 1024 * 1024)
    for (let i = 0; i < payload.length; i += 4) payload.writeUInt32LE((i * 2654435761) >>> 0, i)
    const back = readAll(socket)
    socket.end(payload)
    const echoed = await back
    expect(echoed.length).toBe(payload.length)
    expect(createHash("sha256").update(echoed).digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"))
  })

  it("36. concurrent connections to one gateway are channels of its single SSH connection", async () => {
    const { gatewayId, peer } = await h.connectGateway("multi-gw", "echo")
    const sockets = await Promise.all(Array.from({ length: 20 }, () => h.dialRelay(gatewayId)))
    const replies = await Promise.all(
      sockets.map((s, i) => {
        const r = readAll(s)
        s.end(`hello ${i}`)
        return r
      })
    )
    replies.forEach((r, i) => expect(r.toString()).toBe(`hello ${i}`))
    expect(peer.lines.filter((l) => l.startsWith("CHANNEL ")).length).toBe(20)
    expect(peer.lines.filter((l) => l.startsWith("READY")).length).toBe(1)
  })

  it("31. a .100.3 extension that is not valid JSON: closed, nothing written, no channel opened", async () => {
    const gw = await h.quickGateway("echo")
    const before = refused("invalid_gateway_name")
    for (const gatewayInfo of ["not json", "{\"name\":", "[\"name\"]", "{\"name\":42}"]) {
      const socket = await h.dial(await h.clientCredentials(gw.gatewayId, { gatewayInfo }))
      socket.write("must not arrive")
      expect((await readAll(socket)).length).toBe(0)
    }
    await eventually(() => refused("invalid_gateway_name") === before + 4, "four refusals")
    expect(channels(gw.peer)).toEqual([])
    // Without the extension the gateway name is just empty, and the session is routed.
    const socket = await h.dial(await h.clientCredentials(gw.gatewayId, { gatewayInfo: null }))
    const back = readAll(socket)
    socket.end("no extension")
    expect((await back).toString()).toBe("no extension")
  })

  it("32. each connection opens exactly one direct-tcpip channel with empty type-specific data", async () => {
    const gw = await h.quickGateway("echo")
    for (let i = 0; i < 3; i++) {
      const socket = await h.dialRelay(gw.gatewayId)
      const back = readAll(socket)
      socket.end(`session ${i}`)
      expect((await back).toString()).toBe(`session ${i}`)
      await gw.peer.waitForLine(new RegExp(`^CHANNEL_DONE ${i + 1} `))
    }
    expect(channels(gw.peer)).toEqual(["CHANNEL 1 type=direct-tcpip extra=0", "CHANNEL 2 type=direct-tcpip extra=0", "CHANNEL 3 type=direct-tcpip extra=0"])
  })

  it("34. client EOF reaches the gateway as channel EOF, and the gateway can still answer", async () => {
    const gw = await h.quickGateway("sink")
    const socket = await h.dialRelay(gw.gatewayId)
    const payload = sourceStreamBytes(1024 * 1024 + 17)
    const back = readAll(socket)
    socket.end(payload) // half-close: the socket stays readable
    // The sink only answers after it has seen EOF.
    expect((await back).toString()).toBe(`${payload.length} ${createHash("sha256").update(payload).digest("hex")}\n`)
    expect((await gw.peer.waitForLine(/^CHANNEL_DONE 1 (.*)$/))[1]).toBe(`in=${payload.length} out=${(await back).length}`)
  })

  it("34. gateway EOF reaches the client as end of stream, then the relay closes the connection", async () => {
    const n = 3 * 1024 * 1024 + 5
    const gw = await h.quickGateway(`source:${n}`)
    const socket = await h.dialRelay(gw.gatewayId)
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
    // The client never ends its side: the gateway's EOF alone ends the session.
    const received = await readAll(socket)
    expect(received.equals(sourceStreamBytes(n))).toBe(true)
    await closed
    expect((await gw.peer.waitForLine(/^CHANNEL_DONE 1 (.*)$/))[1]).toBe(`in=0 out=${n}`)
  })

  it("35. the gateway rejects the channel open: the client is closed with nothing written", async () => {
    const before = refused("channel_open_failed")
    const gw = await h.quickGateway("reject")
    const socket = await h.dialRelay(gw.gatewayId)
    socket.write("hello?")
    expect((await readAll(socket)).length).toBe(0)
    await gw.peer.waitForLine(/^CHANNEL_REJECTED 1 type=direct-tcpip extra=0$/)
    await eventually(() => refused("channel_open_failed") === before + 1, "the refusal to be counted")
  })

  it("36. many concurrent clients over one tunnel, interleaved, each gets its own bytes back", async () => {
    const gw = await h.quickGateway("echo")
    const sockets: Array<tls.TLSSocket> = await Promise.all(Array.from({ length: 64 }, () => h.dialRelay(gw.gatewayId)))
    const payloads = sockets.map((_, i) => sourceStreamBytes(64 * 1024 + i).subarray(i))
    const replies = sockets.map((s) => readAll(s))
    // Interleave writes across sessions before ending any of them.
    for (let off = 0; off < 64 * 1024; off += 8 * 1024) sockets.forEach((s, i) => s.write(payloads[i]!.subarray(off, off + 8 * 1024)))
    sockets.forEach((s) => s.end())
    const back = await Promise.all(replies)
    back.forEach((b, i) => expect(b.equals(payloads[i]!)).toBe(true))
    expect(channels(gw.peer)).toHaveLength(64)
  })
})

const refused = (reason: string) => metricValue(tagged(sessionsRefused, "reason", reason))
const channels = (peer: PeerProcess) => peer.lines.filter((l) => l.startsWith("CHANNEL "))

describe("relay metrics", () => {
  it("tunnels: connected gauge and connections by outcome", async () => {
    const connected = metricValue(tunnelsConnected)
    const accepted = metricValue(tagged(tunnelConnections, "outcome", "accepted"))
    const a = await h.quickGateway("echo")
    const b = await h.quickGateway("echo")
    await eventually(() => metricValue(tunnelsConnected) === connected + 2, "two more tunnels")
    expect(metricValue(tagged(tunnelConnections, "outcome", "accepted"))).toBe(accepted + 2)

    const duplicates = metricValue(tagged(tunnelConnections, "outcome", "duplicate_rejected"))
    const dup = await h.spawnPeer(a.files, "echo")
    await dup.waitForLine(/^CLOSED /)
    expect(metricValue(tagged(tunnelConnections, "outcome", "duplicate_rejected"))).toBe(duplicates + 1)
    expect(metricValue(tunnelsConnected)).toBe(connected + 2)

    await b.peer.kill()
    await eventually(() => metricValue(tunnelsConnected) === connected + 1, "one tunnel fewer after a gateway left")
    await a.peer.kill()
    await eventually(() => metricValue(tunnelsConnected) === connected, "back to where it was")
  })

  it("sessions: total, active, bytes each way", async () => {
    const gw = await h.quickGateway("sink")
    const total = metricValue(sessionsTotal)
    const up = metricValue(tagged(sessionBytes, "direction", "client_to_gateway"))
    const down = metricValue(tagged(sessionBytes, "direction", "gateway_to_client"))

    const active = metricValue(sessionsActive)
    const socket = await h.dialRelay(gw.gatewayId)
    socket.write(Buffer.alloc(100_000, 1))
    await gw.peer.waitForLine(/^CHANNEL 1 /)
    await eventually(() => metricValue(sessionsActive) === active + 1, "an active session")
    expect(metricValue(sessionsTotal)).toBe(total + 1)

    const reply = readAll(socket)
    socket.end()
    const answer = await reply // "<bytes> <sha256>\n" from the sink
    await eventually(() => metricValue(sessionsActive) === active, "the session no longer active")
    expect(metricValue(tagged(sessionBytes, "direction", "client_to_gateway"))).toBe(up + 100_000)
    expect(metricValue(tagged(sessionBytes, "direction", "gateway_to_client"))).toBe(down + answer.length)
    expect(metricTotal("relay_session_bytes_total")).toBe(up + down + 100_000 + answer.length)
  })

  it("refusals by reason, heartbeat probes and failed handshakes", async () => {
    const sessions = metricValue(sessionsTotal)
    const notConnected = refused("gateway_not_connected")
    const invalidName = refused("invalid_gateway_name")
    const openFailed = refused("channel_open_failed")
    const probes = metricValue(heartbeatProbes)
    // Not connected.
    expect((await readAll(await h.dialRelay("0c0ffee0-0000-4000-8000-000000000000"))).length).toBe(0)
    await eventually(() => refused("gateway_not_connected") === notConnected + 1, "gateway_not_connected")

    // Invalid gateway-info extension, for a connected gateway.
    const echo = await h.quickGateway("echo")
    const bad = await h.dial(await h.clientCredentials(echo.gatewayId, { gatewayInfo: "{" }))
    expect((await readAll(bad)).length).toBe(0)
    await eventually(() => refused("invalid_gateway_name") === invalidName + 1, "invalid_gateway_name")

    // The gateway refuses the channel.
    const reject = await h.quickGateway("reject")
    expect((await readAll(await h.dialRelay(reject.gatewayId))).length).toBe(0)
    await eventually(() => refused("channel_open_failed") === openFailed + 1, "channel_open_failed")

    // Heartbeat probes are not refusals and open nothing.
    const before = metricTotal("relay_sessions_refused_total")
    const probe = await h.dialRelay(ZERO_UUID, "heartbeat")
    expect((await readAll(probe)).length).toBe(0)
    await eventually(() => metricValue(heartbeatProbes) === probes + 1, "a heartbeat probe")
    expect(metricTotal("relay_sessions_refused_total")).toBe(before)

    // A client certificate from another CA never gets past the handshake.
    const failures = metricTotal("relay_tls_handshake_failures_total")
    await h.dial(await h.clientCredentials(echo.gatewayId, { issuer: "foreign" })).then(
      (s) => new Promise<void>((resolve) => s.on("error", () => {}).once("close", () => resolve())),
      () => undefined // TLS 1.2 clients see the handshake fail; TLS 1.3 clients see a close
    )
    await eventually(() => metricTotal("relay_tls_handshake_failures_total") === failures + 1, "a failed handshake")
    expect(echo.peer.lines.filter((l) => l.startsWith("CHANNEL "))).toEqual([])
    expect(metricValue(sessionsTotal)).toBe(sessions) // none of these became a session
  })
})
