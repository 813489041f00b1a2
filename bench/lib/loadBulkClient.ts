/**
 * The bulk org's client in the load test's fairness runs, in its own process so that decrypting
 * its bulk bytes does not delay the event loop that times the other org's small requests.
 *
 *   node --import tsx bench/lib/loadBulkClient.ts --port P --credentials FILE --sessions K
 *
 * FILE is JSON `{cert, key, ca}` (a relay-client certificate). K sessions each download
 * "SOURCE <n>" from the gateway, again and again. Prints `FLOWING` once every session has
 * received bytes; on SIGTERM prints `DONE bytes=<bytes since FLOWING> ms=<ms since FLOWING>
 * errors=<n>` and exits.
 */
import * as fs from "node:fs"
import { performance } from "node:perf_hooks"
import * as tls from "node:tls"
import { parseArgs } from "node:util"
import type { ClientPem } from "./loadMaterial.ts"
import { download } from "./loadSessions.ts"

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    credentials: { type: "string" },
    sessions: { type: "string", default: "6" },
    "download-bytes": { type: "string", default: String(1 << 30) }
  }
})
const port = Number(values.port)
const sessions = Number(values.sessions)
const downloadBytes = Number(values["download-bytes"])
const pem = JSON.parse(fs.readFileSync(values.credentials!, "utf8")) as ClientPem
const context = tls.createSecureContext({ cert: pem.cert, key: pem.key, ca: [...pem.ca], minVersion: "TLSv1.2" })

let bytes = 0
let errors = 0
let flowingAt: number | undefined
let bytesAtFlowing = 0
const started = new Set<number>()
const stops: Array<() => void> = []
let stopping = false

const session = async (i: number) => {
  while (!stopping) {
    const d = download(port, context, downloadBytes, {
      count: (n) => {
        bytes += n
        if (!started.has(i)) {
          started.add(i)
          if (started.size === sessions) {
            flowingAt = performance.now()
            bytesAtFlowing = bytes
            process.stdout.write("FLOWING\n")
          }
        }
      }
    })
    stops[i] = d.stop
    await d.done.catch((err: Error) => {
      if (!stopping) {
        errors++
        process.stderr.write(`session ${i}: ${err.message}\n`)
      }
    })
  }
}

for (let i = 0; i < sessions; i++) void session(i)

process.once("SIGTERM", () => {
  stopping = true
  const ms = flowingAt === undefined ? 0 : performance.now() - flowingAt
  process.stdout.write(`DONE bytes=${bytes - bytesAtFlowing} ms=${ms.toFixed(0)} errors=${errors}\n`)
  for (const stop of stops) stop?.()
  process.exit(0)
})
