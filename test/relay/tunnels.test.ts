/**
 * The gateway side of the data plane against Go x/crypto/ssh gateway peers (checklist 18-21): one
 * tunnel per gateway, reconnects, our stale-tunnel replacement, global requests and channel opens
 * from the gateway, and a gateway that dies mid-transfer.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { tunnelConnections, tunnelsConnected, tagged } from "../../src/observability/Metrics.ts"
import { STALE_CHECK_MS } from "../../src/relay/SshListener.ts"
import { readAll, type PeerProcess } from "../support/goPeers.ts"
import { eventually, type Harness, metricValue, startHarness } from "../support/relayHarness.ts"

let h: Harness
beforeAll(async () => {
  h = await startHarness()
})
afterAll(() => h?.close())

/** Processes stopped with SIGSTOP by a test: resumed (then killed with the rest) afterwards. */
const stopped = new Set<PeerProcess>()
afterEach(() => {
  for (const p of stopped) if (p.child.pid !== undefined && p.child.exitCode === null) process.kill(p.child.pid, "SIGCONT")
  stopped.clear()
})

/** One session through the relay to an echo gateway: what we send comes back. */
const echoThrough = async (gatewayId: string, message: string): Promise<string> => {
  const socket = await h.dialRelay(gatewayId)
  const back = readAll(socket)
  socket.end(message)
  return (await back).toString()
}

/** The first `n` stdout lines matching `re`, waiting for them. */
const lines = async (peer: PeerProcess, re: RegExp, n: number): Promise<Array<RegExpExecArray>> => {
  const found: Array<RegExpExecArray> = []
  let from = 0
  while (found.length < n) {
    found.push(await peer.waitForLine(re, { fromLine: from }))
    while (!re.test(peer.lines[from]!)) from++
    from++
  }
  return found
}

const channelLines = (peer: PeerProcess) => peer.lines.filter((l) => l.startsWith("CHANNEL "))


describe("one tunnel per gateway (checklist 18, 19)", () => {
  it("18. a second connection as a live gateway is closed right after authentication; the first keeps working", async () => {
    const gw = await h.connectGateway("dup-gw", "echo")
    expect(await echoThrough(gw.gatewayId, "before")).toBe("before")
    const rejectedBefore = metricValue(tagged(tunnelConnections, "outcome", "duplicate_rejected"))

    const second = await h.spawnPeer(gw.files, "echo", {}, "dup-gw-2")
    await second.waitForLine(/^READY/) // authenticated...
    await second.waitForLine(/^CLOSED /) // ...and then closed by the relay
    expect((await second.exited).code).toBe(0)
    expect(metricValue(tagged(tunnelConnections, "outcome", "duplicate_rejected"))).toBe(rejectedBefore + 1)

    // The first connection is untouched and still carries sessions.
    expect(gw.peer.lines.some((l) => l.startsWith("CLOSED"))).toBe(false)
    const channelsBefore = channelLines(gw.peer).length
    expect(await echoThrough(gw.gatewayId, "after")).toBe("after")
    expect(channelLines(gw.peer).length).toBe(channelsBefore + 1)
    expect(channelLines(second)).toEqual([])
  })

  it("19. after the gateway's connection closes, a new connection for it is accepted and routes", async () => {
    const gw = await h.connectGateway("reconnect-gw", "echo")
    expect(await echoThrough(gw.gatewayId, "one")).toBe("one")
    await gw.peer.kill("SIGTERM")

    const again = await h.spawnPeer(gw.files, "echo", {}, "reconnect-gw-2")
    await again.waitForLine(/^READY/)
    expect(await echoThrough(gw.gatewayId, "two")).toBe("two")
    expect(channelLines(again)).toHaveLength(1)
    expect(again.lines.some((l) => l.startsWith("CLOSED"))).toBe(false)
  })

  it("a stale tunnel (frozen gateway) is replaced by the gateway's new connection, which then routes", async () => {
    const gw = await h.connectGateway("stale-gw", "echo")
    expect(await echoThrough(gw.gatewayId, "old")).toBe("old")
    const replacedBefore = metricValue(tagged(tunnelConnections, "outcome", "stale_replaced"))
    const connectedBefore = metricValue(tunnelsConnected)

    // A half-open tunnel: the process is frozen, its TCP connection stays up.
    process.kill(gw.peer.child.pid!, "SIGSTOP")
    stopped.add(gw.peer)

    const fresh = await h.spawnPeer(gw.files, "echo", {}, "stale-gw-2")
    await fresh.waitForLine(/^READY/)
    const authenticatedAt = Date.now()
    // The relay pings the old tunnel; it cannot answer, so after STALE_CHECK_MS the new one wins.
    await eventually(
      () => metricValue(tagged(tunnelConnections, "outcome", "stale_replaced")) === replacedBefore + 1,
      "the stale tunnel to be replaced",
      STALE_CHECK_MS + 10_000
    )
    const tookMs = Date.now() - authenticatedAt
    // (READY reaches us a moment after the relay started its check.)
    expect(tookMs).toBeGreaterThanOrEqual(STALE_CHECK_MS - 1_000)
    expect(tookMs).toBeLessThan(STALE_CHECK_MS + 5_000)
    expect(fresh.lines.some((l) => l.startsWith("CLOSED"))).toBe(false)

    // New sessions go to the new connection.
    expect(await echoThrough(gw.gatewayId, "new")).toBe("new")
    expect(channelLines(fresh)).toHaveLength(1)
    // The old tunnel was closed by the relay and its gauge slot given back: one tunnel for the gateway.
    expect(metricValue(tunnelsConnected)).toBe(connectedBefore)

    // Once thawed, the old process finds its connection gone.
    process.kill(gw.peer.child.pid!, "SIGCONT")
    stopped.delete(gw.peer)
    await gw.peer.waitForLine(/^CLOSED /)
    expect(channelLines(gw.peer)).toHaveLength(1)
  })
})

describe("requests from the gateway (checklist 20, 21)", () => {
  it("20. keepalive@openssh.com, tcpip-forward and unknown global requests get REQUEST_FAILURE promptly", async () => {
    const gw = await h.quickGateway("echo", {
      peer: { keepaliveInterval: "100ms", keepaliveTimeout: "5s", globalRequests: ["tcpip-forward", "no-such-request@example.com"] }
    })
    for (const m of await lines(gw.peer, /^KEEPALIVE reply=(\w+) rtt_ms=([\d.]+)$/, 3)) {
      expect(m[1]).toBe("false")
      expect(Number(m[2])).toBeLessThan(1_000) // the gateway gives up at 15 s
    }
    for (const name of ["tcpip-forward", "no-such-request@example.com"]) {
      const m = await gw.peer.waitForLine(new RegExp(`^GLOBAL_REQUEST name=${name.replace(/\./g, "\\.")} reply=(\\w+) rtt_ms=([\\d.]+)$`))
      expect(m[1]).toBe("false")
      expect(Number(m[2])).toBeLessThan(1_000)
    }
    // Still connected and routing.
    expect(await echoThrough(gw.gatewayId, "alive")).toBe("alive")
  })

  it("21. channel opens from the gateway are rejected: code 1 for session/x11/agent/forwarded-tcpip, 3 otherwise", async () => {
    const expected: ReadonlyArray<readonly [string, number, string]> = [
      ["session", 1, "no shell access"],
      ["x11", 1, "no X11 forwarding"],
      ["auth-agent", 1, "no agent forwarding"],
      ["forwarded-tcpip", 1, "no port forwarding"],
      ["direct-tcpip", 3, "unknown channel type"],
      ["auth-agent@openssh.com", 3, "unknown channel type"],
      ["no-such-type@example.com", 3, "unknown channel type"]
    ]
    const gw = await h.quickGateway("echo", { peer: { openChannels: expected.map(([t]) => t) } })
    for (const [type, code, message] of expected) {
      const m = await gw.peer.waitForLine(new RegExp(`^OPEN type=${type.replace(/\./g, "\\.")} result=(\\S+)(?: code=(\\d+) message=(.*))?$`))
      expect({ type, result: m[1], code: Number(m[2]), message: m[3] }).toEqual({ type, result: "rejected", code, message: JSON.stringify(message) })
    }
    // The connection survives the refusals.
    expect(await echoThrough(gw.gatewayId, "still here")).toBe("still here")
  })
})

describe("a gateway that goes away", () => {
  it("killing the gateway mid-transfer ends its sessions: the client sees a close", async () => {
    const gw = await h.quickGateway(`source:${1024 * 1024 * 1024}`)
    const socket = await h.dialRelay(gw.gatewayId)
    let received = 0
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
    socket.on("error", () => {})
    await new Promise<void>((resolve) => {
      const onData = (chunk: Buffer) => {
        received += chunk.length
        if (received >= 4 * 1024 * 1024) {
          socket.off("data", onData)
          socket.on("data", (c: Buffer) => (received += c.length))
          resolve()
        }
      }
      socket.on("data", onData)
    })
    await gw.peer.kill("SIGKILL")
    await closed
    expect(received).toBeLessThan(1024 * 1024 * 1024)
    // The relay forgot the tunnel: a new session for that gateway gets nothing and is closed.
    const again = await h.dialRelay(gw.gatewayId)
    expect((await readAll(again)).length).toBe(0)
  })
})
