/**
 * Graceful drain of `relay start` (a subprocess, signalled like systemd does): on SIGTERM the
 * relay stops accepting, a session in flight finishes on its own, and the process exits 0 well
 * within the grace period; a session that outlives the grace period is closed at its end.
 */
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { readAll } from "../support/goPeers.ts"
import { type Harness, startHarness } from "../support/relayHarness.ts"

let h: Harness | undefined
afterEach(async () => {
  await h?.close()
  h = undefined
})

/** Resolves with the next chunk the socket reads. */
const nextData = (socket: NodeJS.ReadableStream) => new Promise<Buffer>((resolve) => socket.once("data", resolve))

const connectRefused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, "127.0.0.1")
    s.once("connect", () => {
      s.destroy()
      resolve(false)
    })
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED"))
  })

describe("drain on SIGTERM", () => {
  it("a session in flight completes, new connections are refused, the relay exits 0 within the grace period", async () => {
    h = await startHarness({ subprocess: true, relayArgs: ["--drain-timeout=30s"] })
    const { gatewayId } = await h.connectGateway("drain-gw", "echo")
    const session = await h.dialRelay(gatewayId)
    session.write("before ")
    expect((await nextData(session)).toString()).toBe("before ")

    const signalledAt = Date.now()
    h.relayProcess!.kill("SIGTERM")
    await h.relayProcess!.waitFor(/Shutting down relay server: not accepting, waiting for live sessions/)
    expect(await connectRefused(h.tlsPort)).toBe(true)
    expect(await connectRefused(h.sshPort)).toBe(true)

    // The session still works both ways, then ends normally.
    const rest = readAll(session)
    session.end("after")
    expect((await rest).toString()).toBe("after")
    await h.relayProcess!.waitFor(/All sessions finished/)
    expect(await h.relayProcess!.exited).toEqual({ code: 0, signal: null })
    expect(Date.now() - signalledAt).toBeLessThan(30_000)
  })

  it("a session that outlives --drain-timeout is closed and the relay still exits 0", async () => {
    h = await startHarness({ subprocess: true, relayArgs: ["--drain-timeout=1s"] })
    const { gatewayId } = await h.connectGateway("stuck-gw", "echo")
    const session = await h.dialRelay(gatewayId)
    session.write("ping")
    await nextData(session)
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()))
    h.relayProcess!.kill("SIGTERM")
    await h.relayProcess!.waitFor(/Drain timeout reached, closing remaining sessions/)
    await closed
    expect(await h.relayProcess!.exited).toEqual({ code: 0, signal: null })
  })
})
