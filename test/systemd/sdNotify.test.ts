/**
 * sd_notify (checklist 43): with NOTIFY_SOCKET set, `READY=1` arrives only once both listeners are
 * bound and `Relay server started successfully` was logged, and `STOPPING=1` when the relay shuts
 * down. The receiver is a real AF_UNIX datagram socket (python3, as Node has none), so this goes
 * through the same `systemd-notify` path as under systemd.
 */
import { NodeContext } from "@effect/platform-node"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { ConfigProvider, Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { notifyArgs, sdNotify } from "../../src/notify/SdNotify.ts"
import { type ControlPlaneHandle, runRelay, startControlPlane, waitForRelayLog } from "../controlplane/support.ts"

const python = ["/usr/bin/python3", "/usr/local/bin/python3"].find((p) => fs.existsSync(p))
const systemdNotify = ["/usr/bin/systemd-notify", "/bin/systemd-notify"].find((p) => fs.existsSync(p))
const canRun = python !== undefined && systemdNotify !== undefined

const RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("BOUND", flush=True)
while True:
    print("MSG " + s.recv(4096).decode().replace("\\n", "|"), flush=True)
`

/** A datagram receiver on a unix socket; resolves messages as they arrive. */
const startReceiver = async (socketPath: string) => {
  const child = spawn(python!, ["-u", "-c", RECEIVER, socketPath], { stdio: ["ignore", "pipe", "inherit"] })
  const messages: Array<string> = []
  let waiters: Array<() => void> = []
  readline.createInterface({ input: child.stdout! }).on("line", (line) => {
    messages.push(line)
    const w = waiters
    waiters = []
    for (const f of w) f()
  })
  const next = (re: RegExp, timeoutMs = 20_000) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${re} in ${JSON.stringify(messages)}`)), timeoutMs)
      const check = () => {
        const found = messages.find((m) => re.test(m))
        if (found) {
          clearTimeout(timer)
          resolve(found)
        } else waiters.push(check)
      }
      check()
    })
  await next(/^BOUND$/)
  return { messages, next, stop: () => child.kill("SIGKILL") }
}

const connects = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
  })

let cp: ControlPlaneHandle
beforeAll(async () => {
  cp = await startControlPlane({ relayAuthSecret: "notify-secret" })
})
afterAll(() => cp?.close())

describe("sd_notify", () => {
  it("the message: the relay's pid as MAINPID so systemd attributes it even after the helper exits", () => {
    expect(notifyArgs("READY=1", 4242)).toEqual(["--pid=4242", "READY=1"])
  })

  it("without NOTIFY_SOCKET nothing is sent", async () => {
    const sent = await Effect.runPromise(
      sdNotify("READY=1").pipe(Effect.provide(NodeContext.layer), Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
    )
    expect(sent).toBe(false)
  })

  it.skipIf(!canRun)("43: READY=1 after both listeners are bound and the start is logged; STOPPING=1 at shutdown", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-notify-"))
    const socketPath = path.join(dir, "notify.sock")
    const receiver = await startReceiver(socketPath)
    try {
      const relay = await runRelay({
        controlPlane: cp,
        host: "relay-notify.test",
        flags: { name: "relay-notify", type: "instance" },
        env: { INFISICAL_RELAY_AUTH_SECRET: "notify-secret", NOTIFY_SOCKET: socketPath }
      })
      try {
        const ready = await receiver.next(/^MSG .*\bREADY=1\b/)
        expect(ready.slice(4).split("|").sort()).toEqual([`MAINPID=${process.pid}`, "READY=1"])
        // By then both listeners accept connections and the start was announced.
        expect(relay.logs.messages()).toContain("Relay server started successfully")
        const started = relay.logs.messages().indexOf("Relay server started successfully")
        const listening = relay.logs.messages().findIndex((m) => /^TLS server listening on/.test(m))
        expect(listening).toBeGreaterThanOrEqual(0)
        expect(listening).toBeLessThan(started)
        expect(await connects(relay.tlsPort)).toBe(true)
        expect(await connects(relay.sshPort)).toBe(true)
        await waitForRelayLog(relay, /^sd_notify READY=1$/)
        expect(receiver.messages.some((m) => m.includes("STOPPING=1"))).toBe(false)
      } finally {
        await relay.stop()
      }
      const stopping = await receiver.next(/^MSG .*\bSTOPPING=1\b/)
      expect(stopping.slice(4).split("|").sort()).toEqual([`MAINPID=${process.pid}`, "STOPPING=1"])
      expect(receiver.messages.filter((m) => m.includes("READY=1"))).toHaveLength(1)
    } finally {
      receiver.stop()
    }
  })
})
