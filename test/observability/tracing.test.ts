/**
 * Traces reach a loopback OTLP/HTTP collector configured only through OTEL_* variables: `relay
 * dev` (real relay, real gateway traffic) exports its heartbeat, tunnel and session spans, with
 * the session's gateway id and byte counts as attributes, and the heartbeat probe's session.
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, expect, it } from "vitest"
import { spawnRelay } from "../support/relayProcess.ts"

interface Span {
  readonly name: string
  readonly attributes: ReadonlyArray<{ key: string; value: Record<string, unknown> }>
}
const received: Array<Span> = []
let collector: http.Server
let endpoint = ""

beforeAll(async () => {
  collector = http.createServer((req, res) => {
    let body = ""
    req.on("data", (c: Buffer) => (body += c.toString("utf8")))
    req.on("end", () => {
      if (req.url === "/v1/traces") {
        const parsed = JSON.parse(body) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<Span> }> }> }
        for (const rs of parsed.resourceSpans) for (const ss of rs.scopeSpans) received.push(...ss.spans)
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve))
  endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`
})
afterAll(() => collector.close())

it("relay dev exports heartbeat, tunnel and session spans over OTLP/HTTP", async () => {
  const p = spawnRelay(["relay", "dev", "--transfer-mib", "1"], {
    HOME: "/tmp",
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_SERVICE_NAME: "relay-under-test"
  })
  try {
    await p.waitFor(/Press Ctrl-C to stop\./, 90_000)
    await p.waitFor(/Relay is reachable by Infisical/, 30_000)
    p.kill("SIGINT")
    expect((await p.exited).code).toBe(0)
  } finally {
    p.kill()
  }
  // Spans are flushed at shutdown, before the process exits.
  const names = new Set(received.map((s) => s.name))
  expect(names).toContain("relay.heartbeat")
  expect(names).toContain("relay.tunnel")
  expect(names).toContain("relay.session")
  const session = received.find(
    (s) => s.name === "relay.session" && s.attributes.some((a) => a.key === "relay.bytes_up" && Number(Object.values(a.value)[0]) > 1_000_000)
  )
  expect(session).toBeDefined()
  expect(session!.attributes.map((a) => a.key)).toEqual(expect.arrayContaining(["relay.gateway_id", "relay.channel_open_ms", "relay.bytes_down", "relay.close_reason"]))
  // The control plane's reachability probe is a session too, marked as such.
  expect(received.some((s) => s.name === "relay.session" && s.attributes.some((a) => a.key === "relay.heartbeat_probe"))).toBe(true)
})
