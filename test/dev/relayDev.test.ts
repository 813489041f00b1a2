/**
 * `infisical relay dev` from a clean build, as a new user runs it: the ping and the bulk transfer
 * go through the real path and the relay's own counters saw them.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { freePort } from "../support/relayHarness.ts"
import { spawnRelay } from "../support/relayProcess.ts"

const repoRoot = path.resolve(import.meta.dirname, "../..")
const outDir = path.join(repoRoot, ".cache", `build-relay-dev-${process.pid}`)

beforeAll(() => {
  execFileSync(process.execPath, [path.join(repoRoot, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json", "--outDir", outDir], {
    cwd: repoRoot,
    stdio: "inherit"
  })
}, 180_000)
afterAll(() => fs.rmSync(outDir, { recursive: true, force: true }))

it("relay dev: PONG through the relay, 16 MiB echoed intact, counted in /metrics; Ctrl-C exits 0", async () => {
  const statusPort = await freePort()
  const p = spawnRelay(
    ["relay", "dev", "--transfer-mib", "16", "--status-addr", `127.0.0.1:${statusPort}`],
    { HOME: "/tmp" },
    { entry: [path.join(outDir, "bin.js")] }
  )
  try {
    await p.waitFor(/Press Ctrl-C to stop\./, 90_000)
    const out = p.output()
    expect(out).toMatch(/Relay server started successfully/)
    expect(out).toMatch(/ping {11}PONG in \d+ ms/)
    expect(out).toMatch(/transfer {7}ok: 16\.0 MiB each way through the relay .* sha256 equal/)
    // Two sessions: the ping and the transfer; the transfer's bytes both ways (plus TLS overhead).
    const counted = out.match(/relay counted {2}(\d+) sessions, ([\d.]+) MiB client->gateway, ([\d.]+) MiB gateway->client/)
    expect(counted).not.toBeNull()
    expect(Number(counted![1])).toBe(2)
    expect(Number(counted![2])).toBeGreaterThanOrEqual(16)
    expect(Number(counted![3])).toBeGreaterThanOrEqual(16)
    const ready = await fetch(`http://127.0.0.1:${statusPort}/readyz`)
    expect(ready.status).toBe(200)
    const metrics = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`)).text()
    expect(metrics).toMatch(/^relay_sessions_total 2$/m)
    expect(metrics).toMatch(/^relay_tunnels_connected 1$/m)
    const bytes = (direction: string) =>
      Number(metrics.match(new RegExp(`^relay_session_bytes_total\\{direction="${direction}"\\} (\\d+)$`, "m"))?.[1])
    expect(bytes("client_to_gateway")).toBeGreaterThanOrEqual(16 * 1024 * 1024)
    expect(bytes("gateway_to_client")).toBeGreaterThanOrEqual(16 * 1024 * 1024)
    p.kill("SIGINT")
    expect((await p.exited).code).toBe(0)
  } finally {
    p.kill()
  }
})
