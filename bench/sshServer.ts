/**
 * The TypeScript half of the SSH-layer benchmark: our SSH server (src/ssh, as the relay's
 * SshListener configures it: host certificate, certificate-only auth, default channel limits,
 * the relay's keepalive settings) moving raw channel bytes to and from a gateway, with no TLS
 * listener in front. Its Go twin is bench/go-ssh-server (x/crypto/ssh); bench/run.ts drives both
 * the same way.
 *
 *   node --import tsx bench/sshServer.ts --host-cert FILE --host-key FILE [--addr 127.0.0.1:0]
 *
 * Commands on stdin, one per line, each on a new direct-tcpip channel to the most recently
 * authenticated gateway (test/go/gateway -mode bench):
 *   DOWN <n>   send "SOURCE <n>\n", read the gateway's n bytes to EOF
 *   UP <n>     send "DISCARD\n" then n bytes, half-close, read the reply
 * stdout: `LISTENING <addr>`, `GATEWAY <user>`, then `DONE bytes=<n> ms=<ms>` or `ERROR <message>`.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import { performance } from "node:perf_hooks"
import * as readline from "node:readline"
import { CERT_TYPE_USER } from "../src/ssh/certs.ts"
import { parseOpenSshPrivateKey } from "../src/ssh/keys.ts"
import { acceptSshConnection, type SshChannel, type SshServerConnection } from "../src/ssh/server.ts"

/** The relay's tunnel keepalive (src/relay/SshListener.ts TUNNEL_KEEPALIVE). */
const KEEPALIVE = { intervalMs: 15_000, timeoutMs: 30_000 }
const CHUNK = Buffer.alloc(32 * 1024)

const args = process.argv.slice(2)
const arg = (name: string) => {
  const i = args.indexOf(name)
  return i === -1 ? undefined : args[i + 1]
}
const hostCert = arg("--host-cert")
const hostKey = arg("--host-key")
if (hostCert === undefined || hostKey === undefined) {
  process.stderr.write("usage: sshServer.ts --host-cert FILE --host-key FILE [--addr host:port]\n")
  process.exit(1)
}
const addr = arg("--addr") ?? "127.0.0.1:0"
const hostKeyConfig = {
  certificate: fs.readFileSync(hostCert, "utf8"),
  privateKey: parseOpenSshPrivateKey(fs.readFileSync(hostKey, "utf8"))
}

type Decision = { readonly ok: true } | { readonly ok: false; readonly reason: string }
let current: SshServerConnection<Decision> | undefined

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on("error", () => socket.destroy())
  const conn = acceptSshConnection<Decision>(socket, {
    hostKey: hostKeyConfig,
    authenticate: ({ certificate }) =>
      certificate.certType === CERT_TYPE_USER ? { ok: true } : { ok: false, reason: "user certificate required" },
    keepalive: KEEPALIVE
  })
  conn.authenticated.then(
    (auth) => {
      current = conn
      process.stdout.write(`GATEWAY ${auth.username}\n`)
    },
    () => undefined
  )
})

const readToEnd = (channel: SshChannel): Promise<{ bytes: number; text: string }> =>
  new Promise((resolve, reject) => {
    let bytes = 0
    let text = ""
    channel.on("data", (chunk: Buffer) => {
      bytes += chunk.length
      if (text.length < 64) text += chunk.toString("latin1")
    })
    channel.once("end", () => resolve({ bytes, text }))
    channel.once("error", reject)
    channel.once("close", () => resolve({ bytes, text }))
  })

const writeAll = async (channel: SshChannel, n: number): Promise<void> => {
  let left = n
  while (left > 0) {
    const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left)
    left -= chunk.length
    if (!channel.write(chunk)) await new Promise<void>((resolve) => channel.once("drain", resolve))
  }
}

const down = async (n: number): Promise<number> => {
  if (!current) throw new Error("no gateway connected")
  const channel = await current.openDirectTcpip({ timeoutMs: 10_000 })
  try {
    const done = readToEnd(channel)
    channel.write(`SOURCE ${n}\n`)
    const { bytes } = await done
    if (bytes !== n) throw new Error(`got ${bytes} bytes, want ${n}`)
    return bytes
  } finally {
    channel.destroy()
  }
}

const up = async (n: number): Promise<number> => {
  if (!current) throw new Error("no gateway connected")
  const channel = await current.openDirectTcpip({ timeoutMs: 10_000 })
  try {
    const done = readToEnd(channel)
    channel.write("DISCARD\n")
    await writeAll(channel, n)
    channel.end()
    const { text } = await done
    if (text.trim() !== String(n)) throw new Error(`gateway counted ${JSON.stringify(text.trim())}, want ${n}`)
    return n
  } finally {
    channel.destroy()
  }
}

const i = addr.lastIndexOf(":")
server.listen(Number(addr.slice(i + 1)), addr.slice(0, i), () => {
  const a = server.address() as net.AddressInfo
  process.stdout.write(`LISTENING ${a.address}:${a.port}\n`)
})

// One command at a time, in order.
let queue = Promise.resolve()
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  queue = queue.then(async () => {
    const [cmd, size] = line.trim().split(/\s+/)
    const n = Number(size)
    const start = performance.now()
    try {
      if (!Number.isSafeInteger(n) || n < 0) throw new Error(`bad size ${JSON.stringify(size)}`)
      let bytes: number
      if (cmd === "DOWN") bytes = await down(n)
      else if (cmd === "UP") bytes = await up(n)
      else throw new Error(`unknown command ${cmd}`)
      process.stdout.write(`DONE bytes=${bytes} ms=${(performance.now() - start).toFixed(3)}\n`)
    } catch (err) {
      process.stdout.write(`ERROR ${JSON.stringify(err instanceof Error ? err.message : String(err))}\n`)
    }
  })
}).on("close", () => process.exit(0))

for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => process.exit(0))
