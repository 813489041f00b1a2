/**
 * A loopback TCP proxy that delays every chunk by a fixed time in each direction (no netem in this
 * container). With 25 ms each way it turns a loopback hop into a 50 ms round trip, so a transfer
 * through it is limited by whichever window the endpoints advertise: for a relay, the SSH channel
 * window the relay grants the gateway decides gateway -> client throughput.
 *
 * The delay line buffers what is in flight (a real link's bandwidth-delay product) and only stops
 * reading when more than `maxBufferedBytes` is queued in one direction; EOF is delayed like data.
 *
 * Run standalone (the benchmark does, so the proxy's event loop is its own):
 *   node --import tsx bench/delayProxy.ts --target 127.0.0.1:PORT [--listen 127.0.0.1:0] [--delay-ms 25]
 * prints `LISTENING <host>:<port>`.
 */
import * as net from "node:net"
import { performance } from "node:perf_hooks"

export interface DelayProxyOptions {
  readonly target: { readonly host: string; readonly port: number }
  readonly listen?: { readonly host: string; readonly port: number }
  /** one-way delay in ms (default 25) */
  readonly delayMs?: number
  /** per direction; reading pauses above it (default 256 MiB) */
  readonly maxBufferedBytes?: number
}

interface Item {
  readonly due: number
  /** undefined = EOF */
  readonly chunk: Buffer | undefined
}

/** One direction: src -> (delay) -> dst. */
const delayLine = (src: net.Socket, dst: net.Socket, delayMs: number, maxBuffered: number) => {
  const queue: Array<Item> = []
  let head = 0
  let queued = 0
  let timer: NodeJS.Timeout | undefined
  let paused = false

  const flush = () => {
    timer = undefined
    const now = performance.now()
    // Everything due leaves in one writev: the proxy stands for a network, whose CPU is not on
    // any host of the chain, so it should take as little of this machine's two cores as it can.
    dst.cork()
    while (head < queue.length && queue[head]!.due <= now + 0.5) {
      const item = queue[head++]!
      if (item.chunk === undefined) {
        dst.end()
      } else {
        queued -= item.chunk.length
        dst.write(item.chunk)
      }
    }
    dst.uncork()
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head)
      head = 0
    }
    if (paused && queued + dst.writableLength < maxBuffered / 2) {
      paused = false
      src.resume()
    }
    arm()
  }
  const arm = () => {
    if (timer !== undefined || head >= queue.length) return
    timer = setTimeout(flush, Math.max(0, queue[head]!.due - performance.now()))
  }
  src.on("data", (chunk: Buffer) => {
    queue.push({ due: performance.now() + delayMs, chunk })
    queued += chunk.length
    if (!paused && queued + dst.writableLength > maxBuffered) {
      paused = true
      src.pause()
    }
    arm()
  })
  dst.on("drain", () => {
    if (paused && queued + dst.writableLength < maxBuffered / 2) {
      paused = false
      src.resume()
    }
  })
  src.on("end", () => {
    queue.push({ due: performance.now() + delayMs, chunk: undefined })
    arm()
  })
  return () => {
    if (timer !== undefined) clearTimeout(timer)
  }
}

export const startDelayProxy = (o: DelayProxyOptions): Promise<net.Server> =>
  new Promise((resolve, reject) => {
    const delayMs = o.delayMs ?? 25
    const maxBuffered = o.maxBufferedBytes ?? 256 * 1024 * 1024
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
      const upstream = net.connect({ host: o.target.host, port: o.target.port, allowHalfOpen: true, noDelay: true })
      const stops = [delayLine(client, upstream, delayMs, maxBuffered), delayLine(upstream, client, delayMs, maxBuffered)]
      let closed = false
      const close = () => {
        if (closed) return
        closed = true
        for (const stop of stops) stop()
        client.destroy()
        upstream.destroy()
      }
      // A reset or error on either side is a broken link: drop both (after the delay, like a RST
      // would). A clean end travels as a delayed EOF; each socket closes itself once both of its
      // directions have ended.
      client.on("error", () => setTimeout(close, delayMs))
      upstream.on("error", () => setTimeout(close, delayMs))
    })
    server.once("error", reject)
    server.listen(o.listen?.port ?? 0, o.listen?.host ?? "127.0.0.1", () => resolve(server))
  })

const parseAddr = (s: string) => {
  const i = s.lastIndexOf(":")
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) }
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const args = process.argv.slice(2)
  const arg = (name: string) => {
    const i = args.indexOf(name)
    return i === -1 ? undefined : args[i + 1]
  }
  const target = arg("--target")
  if (target === undefined) {
    process.stderr.write("usage: delayProxy.ts --target host:port [--listen host:port] [--delay-ms 25]\n")
    process.exit(1)
  }
  const listen = arg("--listen")
  const delay = arg("--delay-ms")
  const server = await startDelayProxy({
    target: parseAddr(target),
    ...(listen === undefined ? {} : { listen: parseAddr(listen) }),
    ...(delay === undefined ? {} : { delayMs: Number(delay) })
  })
  const addr = server.address() as net.AddressInfo
  process.stdout.write(`LISTENING ${addr.address}:${addr.port}\n`)
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => process.exit(0))
}
