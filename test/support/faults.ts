/**
 * Probes for the fault suite (test/relay/faults.test.ts): what a relay subprocess holds (RSS,
 * sockets, /proc), what its status server says (/metrics, /readyz), and raw TCP probes that send
 * arbitrary bytes and count what comes back. Plain Node (promises): test scaffolding around an
 * external process.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as tls from "node:tls"
import type { PeerProcess } from "./goPeers.ts"

export const MiB = 1024 * 1024

/** Resident set size of a process, from /proc/<pid>/status (kB -> bytes). */
export const rssOf = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
  if (!m) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1]) * 1024
}

/** Resident bytes of the C allocator's main heap (the `[heap]` mapping in /proc/<pid>/smaps). */
export const mallocHeapOf = (pid: number): number => {
  const m = /\[heap\]\n(?:.*\n)*?Rss:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/smaps`, "utf8"))
  return m ? Number(m[1]) * 1024 : 0
}

/** Open sockets of a process: its file descriptors that are sockets (listeners included). */
export const socketCount = (pid: number): number =>
  fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")
    } catch {
      return false // closed while we looked
    }
  }).length

/** Waits (bounded) until the async `check` holds; polls every `everyMs`. Returns the time it took. */
export const eventuallyAsync = async (
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs: number,
  everyMs = 100
): Promise<number> => {
  const started = Date.now()
  for (;;) {
    if (await check()) return Date.now() - started
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

/** GET `path` on the status server: status code and body. */
export const statusGet = async (port: number, path: string): Promise<{ status: number; body: string }> => {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5_000) })
  return { status: response.status, body: await response.text() }
}

/** Prometheus text -> a reader: sum of `name` over its series, optionally only those with `labels`. */
export const parseMetrics = (text: string) => {
  const series: Array<{ name: string; labels: Record<string, string>; value: number }> = []
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line)
    if (!m) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    series.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return (name: string, labels: Record<string, string> = {}): number =>
    series
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((sum, s) => sum + s.value, 0)
}

/** Scrape the relay's /metrics once. */
export const scrape = async (statusPort: number) => parseMetrics((await statusGet(statusPort, "/metrics")).body)

export interface ProbeResult {
  /** Every byte the relay wrote to this connection. */
  readonly received: Buffer
  /** How it ended: the relay closed (FIN or RST), or our deadline came first. */
  readonly end: "closed" | "timeout"
  readonly ms: number
}

export interface ProbeOptions {
  /** Written right after connect (nothing: a bare connect). */
  readonly send?: Buffer
  /** After sending: "close" destroys at once (connect-and-close), "half-close" sends FIN and keeps
   *  reading, "hold" keeps the connection open and reading until the relay closes it. */
  readonly then: "close" | "half-close" | "hold"
  /** Give up (and destroy) after this long. */
  readonly timeoutMs: number
}

/**
 * One raw TCP connection to `port`: send `send`, then close / half-close / hold, and count every
 * byte the relay writes until it closes the connection (or the deadline). Never rejects: a reset
 * is just a close.
 */
export const probe = (port: number, o: ProbeOptions): Promise<ProbeResult> =>
  new Promise((resolve) => {
    const started = Date.now()
    const chunks: Array<Buffer> = []
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
    let settled = false
    const settle = (end: ProbeResult["end"]) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ received: Buffer.concat(chunks), end, ms: Date.now() - started })
    }
    const timer = setTimeout(() => settle("timeout"), o.timeoutMs)
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("error", () => settle("closed"))
    socket.on("close", () => settle("closed"))
    socket.on("end", () => settle("closed"))
    socket.once("connect", () => {
      if (o.send !== undefined && o.send.length > 0) socket.write(o.send)
      if (o.then === "close") socket.destroy()
      else if (o.then === "half-close") socket.end()
    })
  })

/** The first flight of a real Node TLS client (a ClientHello record), captured on a local server. */
export const captureClientHello = (): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.once("data", (hello: Buffer) => {
        socket.destroy()
        server.close()
        resolve(hello)
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      const client = tls.connect({ host: "127.0.0.1", port, servername: "relay.example", rejectUnauthorized: false })
      client.on("error", () => {})
    })
    server.on("error", reject)
  })

/** Runs `work` over `items` with at most `limit` in flight. */
export const pooled = async <A, B>(items: ReadonlyArray<A>, limit: number, work: (a: A, i: number) => Promise<B>): Promise<Array<B>> => {
  const out: Array<B> = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await work(items[i]!, i)
    }
  }))
  return out
}

/** Resolves when `socket` emits 'close'; rejects after `timeoutMs` (a hang is a failure). */
export const closedWithin = (socket: net.Socket, timeoutMs: number, what: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = Date.now()
    if (socket.destroyed && socket.closed) return resolve(0)
    const timer = setTimeout(() => reject(new Error(`${what}: not closed within ${timeoutMs} ms`)), timeoutMs)
    socket.once("close", () => {
      clearTimeout(timer)
      resolve(Date.now() - started)
    })
  })

/** One echo round trip on an open session: write `message`, wait for it back; returns ms. */
export const echoRoundTrip = (socket: net.Socket, message: string, timeoutMs = 10_000): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    let text = ""
    const timer = setTimeout(() => {
      socket.off("data", onData)
      reject(new Error(`no echo of ${JSON.stringify(message)} within ${timeoutMs} ms (got ${JSON.stringify(text)})`))
    }, timeoutMs)
    const onData = (chunk: Buffer) => {
      text += chunk.toString()
      if (text.length < message.length) return
      clearTimeout(timer)
      socket.off("data", onData)
      if (text === message) resolve(performance.now() - started)
      else reject(new Error(`echo mismatch: sent ${JSON.stringify(message)}, got ${JSON.stringify(text)}`))
    }
    socket.on("data", onData)
    socket.write(message)
  })

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** The Go gateway peer's counters: SIGUSR1 makes it print a STATS line; waits for that line. */
export const gatewayStats = async (peer: PeerProcess): Promise<{ bytesOut: number; channelsActive: number }> => {
  const from = peer.lines.length
  peer.child.kill("SIGUSR1")
  const m = await peer.waitForLine(/^STATS (.*)$/, { fromLine: from, timeoutMs: 5_000 })
  return JSON.parse(m[1]!) as { bytesOut: number; channelsActive: number }
}

/** The TCP sockets of a process as `ss` shows them (state, local, peer): for failure messages. */
export const socketStates = (pid: number): Array<string> => {
  try {
    return execFileSync("ss", ["-tanpH"], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.includes(`pid=${pid},`))
      .map((l) => l.trim().split(/\s+/).filter((_, i) => i === 0 || i === 3 || i === 4).join(" "))
  } catch {
    return []
  }
}
