/**
 * The data plane end to end, the way production runs: a backend-style client (outer mTLS to the
 * relay, inner TLS to the gateway) through our relay to a Go x/crypto/ssh gateway peer configured
 * like Infisical's gateway. Checklist items 18-37.
 */
import { createHash } from "node:crypto"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readAll } from "../support/goPeers.ts"
import { type Harness, startHarness } from "../support/relayHarness.ts"

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

  it("30. a gateway that is not connected: closed with zero bytes written", async () => {
    const socket = await h.dialRelay("6d2c9a51-0000-4000-8000-000000000000")
    const received = await readAll(socket)
    expect(received.length).toBe(0)
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
    void Effect.void
  })
})
