/**
 * `npm run load`: our relay at scale, on loopback, as a `relay start` subprocess registered with
 * src/dev's control plane (in this process), with Go gateways (test/go/gateway, -connections
 * mode) and backend-style mTLS clients (this process).
 *
 *   npm run load [-- --tunnels 1000] [--sessions 5000] [--gateway-procs 4] [--only scale,fair]
 *                [--relay-runner dist|tsx] [--no-write]
 *
 * Scale: relay RSS idle, with the tunnels, with the sessions held open (-> KiB per tunnel and per
 * session); the session setup rate while ramping; p50/p99 of a 64-byte echo on one idle session
 * at a time while all are open.
 * Fairness: org A runs bulk downloads (gateway -> client, in a separate client process) while org
 * B times 64-byte echoes; B's p50/p99 with A idle and with A bulk, and A's throughput, with
 * --fair-share=true and --fair-share=false when the relay has the flag.
 *
 * Prints a markdown section and writes it into docs/load.md (between the load markers).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import type * as tls from "node:tls"
import { parseArgs } from "node:util"
import { buildGo, buildRelay, goVersion, repoRoot } from "./lib/build.ts"
import { type LoadMaterial, makeLoadMaterial, type Org } from "./lib/loadMaterial.ts"
import { fdCount, optionalFlags, type RelayRunner, relayStartHelp, startLoadRelay } from "./lib/loadRelay.ts"
import { fmt, LOAD_DOC, machine, markdownTable, writeSection } from "./lib/loadReport.ts"
import { openEchoSession, roundTrip } from "./lib/loadSessions.ts"
import { MiB, percentile } from "./lib/measure.ts"
import { installExitHooks, Proc, settledRssKiB, runToExit, stopAll } from "./lib/procs.ts"
import { type Gateway, startGateway } from "./lib/subjects.ts"

const { values: args } = parseArgs({
  options: {
    tunnels: { type: "string", default: "1000" },
    sessions: { type: "string", default: "5000" },
    "gateway-procs": { type: "string", default: "4" },
    "dial-concurrency": { type: "string", default: "64" },
    "echo-samples": { type: "string", default: "1000" },
    "fair-seconds": { type: "string", default: "10" },
    "bulk-sessions": { type: "string", default: "6" },
    only: { type: "string", default: "scale,fair" },
    "relay-runner": { type: "string", default: "dist" },
    "no-write": { type: "boolean", default: false }
  }
})
const TUNNELS = Number(args.tunnels)
const SESSIONS = Number(args.sessions)
const GATEWAY_PROCS = Math.max(1, Math.min(TUNNELS, Number(args["gateway-procs"])))
const DIAL_CONCURRENCY = Number(args["dial-concurrency"])
const ECHO_SAMPLES = Number(args["echo-samples"])
const FAIR_SECONDS = Number(args["fair-seconds"])
const BULK_SESSIONS = Number(args["bulk-sessions"])
const phases = new Set(args.only.split(","))

const t0 = performance.now()
const log = (msg: string) => {
  const s = Math.round((performance.now() - t0) / 1000)
  process.stderr.write(`[${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}] ${msg}\n`)
}

const ECHO_PAYLOAD = Buffer.alloc(64, 0x61)

/** Sequential 64-byte echoes over `sockets`, round robin; ms each. */
const echoLatencies = async (sockets: ReadonlyArray<tls.TLSSocket>, n: number): Promise<Array<number>> => {
  const out: Array<number> = []
  for (let i = 0; i < n; i++) out.push(await roundTrip(sockets[i % sockets.length]!, ECHO_PAYLOAD))
  return out
}

/** 64-byte echoes over one session, one after another, for `seconds` (and at least 100). */
const echoesFor = async (socket: tls.TLSSocket, seconds: number): Promise<Array<number>> => {
  const out: Array<number> = []
  const end = performance.now() + seconds * 1000
  while (performance.now() < end || out.length < 100) out.push(await roundTrip(socket, ECHO_PAYLOAD))
  return out
}

/**
 * RSS once it has stopped moving: 1 s samples until three in a row lie within 1 MiB (at most
 * 20 s), then their median. A relay just started or just loaded is still collecting garbage.
 */
const quietRssKiB = async (pid: number): Promise<number> => {
  const recent: Array<number> = []
  const deadline = Date.now() + 20_000
  for (;;) {
    recent.push(await settledRssKiB(pid, 3, 100))
    const last = recent.slice(-3)
    if ((last.length === 3 && Math.max(...last) - Math.min(...last) <= 1024) || Date.now() > deadline) {
      return [...last].sort((a, b) => a - b)[Math.floor(last.length / 2)]!
    }
    await new Promise((resolve) => setTimeout(resolve, 1000))
  }
}

/** Runs `task(i)` for i in [0, n) with at most `concurrency` in flight. */
const pool = async (n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> => {
  let next = 0
  const worker = async () => {
    while (next < n) await task(next++)
  }
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, worker))
}

/** Starts `total` gateway tunnels over `procs` gateway processes in parallel. */
const startGateways = async (m: LoadMaterial, bin: string, sshPort: number, total: number, procs: number, label: string) => {
  const per = Array.from({ length: procs }, (_, i) => Math.floor(total / procs) + (i < total % procs ? 1 : 0))
  return Promise.all(per.map((connections, i) =>
    startGateway(m, bin, { label: `${label} ${i + 1}/${procs}`, sshAddr: `127.0.0.1:${sshPort}`, connections })
  ))
}

// ---------------------------------------------------------------------------------------------
// scale

interface ScaleResult {
  readonly rssIdleKiB: number
  readonly rssTunnelsKiB: number
  readonly rssSessionsKiB: number
  readonly rssAfterKiB: number
  readonly fds: { readonly idle: number; readonly tunnels: number; readonly sessions: number; readonly after: number }
  readonly tunnelSetupSeconds: number
  readonly sessionSetupSeconds: number
  /** Sessions per second in each tenth of the ramp. */
  readonly rampRates: ReadonlyArray<number>
  readonly sessionFailures: number
  readonly echoMs: ReadonlyArray<number>
  readonly echoSessions: number
}

const scale = async (m: LoadMaterial, gatewayBin: string, runner: RelayRunner, limitArgs: ReadonlyArray<string>): Promise<ScaleResult> => {
  const relay = await startLoadRelay(m, { runner, args: limitArgs })
  const rssIdleKiB = await quietRssKiB(relay.pid)
  const fdsIdle = fdCount(relay.pid)
  log(`relay up (pid ${relay.pid}): RSS ${fmt(rssIdleKiB / 1024)} MiB, ${fdsIdle} fds`)

  const tunnelStart = performance.now()
  const gateways: Array<Gateway> = await startGateways(m, gatewayBin, relay.sshPort, TUNNELS, GATEWAY_PROCS, "gateways")
  await relay.waitMetric("relay_tunnels_connected", TUNNELS, 120_000)
  const tunnelSetupSeconds = (performance.now() - tunnelStart) / 1000
  const rssTunnelsKiB = await quietRssKiB(relay.pid)
  const fdsTunnels = fdCount(relay.pid)
  log(`${TUNNELS} tunnels in ${fmt(tunnelSetupSeconds)} s: RSS ${fmt(rssTunnelsKiB / 1024)} MiB, ${fdsTunnels} fds`)

  const ids = gateways.flatMap((g) => g.ids)
  log(`minting ${ids.length} client certificates`)
  const contexts = await Promise.all(ids.map((id) => m.clientContext(id)))

  const sockets: Array<tls.TLSSocket> = []
  let failures = 0
  const doneAt: Array<number> = []
  const rampStart = performance.now()
  await pool(SESSIONS, DIAL_CONCURRENCY, async (i) => {
    try {
      sockets.push(await openEchoSession(relay.tlsPort, contexts[i % contexts.length]!, 60_000))
      doneAt.push(performance.now() - rampStart)
      if (sockets.length % 1000 === 0) log(`${sockets.length} sessions open`)
    } catch (err) {
      if (failures++ < 5) log(`session ${i} failed: ${(err as Error).message}`)
    }
  })
  const sessionSetupSeconds = (performance.now() - rampStart) / 1000
  const tenth = Math.max(1, Math.floor(doneAt.length / 10))
  const rampRates: Array<number> = []
  for (let k = 0; k + tenth <= doneAt.length; k += tenth) {
    const from = k === 0 ? 0 : doneAt[k - 1]!
    rampRates.push(tenth / ((doneAt[k + tenth - 1]! - from) / 1000))
  }
  await relay.waitMetric("relay_sessions_active", sockets.length, 60_000)
  const rssSessionsKiB = await quietRssKiB(relay.pid)
  const fdsSessions = fdCount(relay.pid)
  log(`${sockets.length} sessions (${failures} failed) in ${fmt(sessionSetupSeconds)} s: RSS ${fmt(rssSessionsKiB / 1024)} MiB, ${fdsSessions} fds`)

  // Small requests on idle sessions: a spread-out sample, while every session stays open.
  const sample = sockets.filter((_, i) => i % Math.max(1, Math.floor(sockets.length / 200)) === 0)
  const echoMs = await echoLatencies(sample, ECHO_SAMPLES)
  log(`echo on idle sessions: p50 ${fmt(percentile(echoMs, 50), 2)} ms, p99 ${fmt(percentile(echoMs, 99), 2)} ms`)

  for (const s of sockets) s.destroy()
  await relay.waitMetric("relay_sessions_active", 0, 60_000)
  const rssAfterKiB = await quietRssKiB(relay.pid)
  const fdsAfter = fdCount(relay.pid)
  log(`sessions closed: RSS ${fmt(rssAfterKiB / 1024)} MiB, ${fdsAfter} fds`)
  await Promise.all(gateways.map((g) => g.proc.stop()))
  await relay.stop()
  return {
    rssIdleKiB,
    rssTunnelsKiB,
    rssSessionsKiB,
    rssAfterKiB,
    fds: { idle: fdsIdle, tunnels: fdsTunnels, sessions: fdsSessions, after: fdsAfter },
    tunnelSetupSeconds,
    sessionSetupSeconds,
    rampRates,
    sessionFailures: failures,
    echoMs,
    echoSessions: sample.length
  }
}

// ---------------------------------------------------------------------------------------------
// fairness

interface FairResult {
  readonly label: string
  readonly idleMs: ReadonlyArray<number>
  readonly bulkMs: ReadonlyArray<number>
  readonly bulkMiBps: number
  readonly bulkErrors: number
}

const fairness = async (
  m: LoadMaterial,
  gatewayBin: string,
  runner: RelayRunner,
  relayArgs: ReadonlyArray<string>,
  label: string,
  orgs: { readonly a: Org; readonly b: Org }
): Promise<FairResult> => {
  const relay = await startLoadRelay(m, { runner, args: relayArgs, label: `relay (${label})` })
  const [gw] = await startGateways(m, gatewayBin, relay.sshPort, 2, 1, `gateways (${label})`)
  await relay.waitMetric("relay_tunnels_connected", 2, 60_000)
  const [gatewayA, gatewayB] = gw!.ids as [string, string]

  const credentialsFile = path.join(m.dir, `org-a-${label.replace(/\W+/g, "-")}.json`)
  fs.writeFileSync(credentialsFile, JSON.stringify(await m.clientCredentials(gatewayA, orgs.a)), { mode: 0o600 })
  const bSocket = await openEchoSession(relay.tlsPort, await m.clientContext(gatewayB, orgs.b))
  // B alone (A idle), then with A's bulk running: echoes for the same time.
  await echoLatencies([bSocket], 50) // warm-up
  const idleMs = await echoesFor(bSocket, FAIR_SECONDS)

  const bulk = new Proc(`org A bulk (${label})`, process.execPath, [
    "--import", "tsx", path.join(repoRoot, "bench", "lib", "loadBulkClient.ts"),
    "--port", String(relay.tlsPort), "--credentials", credentialsFile, "--sessions", String(BULK_SESSIONS)
  ], { cwd: repoRoot })
  await bulk.waitFor(/^FLOWING$/, { timeoutMs: 60_000 })
  const bulkMs = await echoesFor(bSocket, FAIR_SECONDS)
  await bulk.stop("SIGTERM")
  const done = await bulk.waitFor(/^DONE bytes=(\d+) ms=(\d+) errors=(\d+)$/, { timeoutMs: 1_000 })
  const bulkMiBps = Number(done[1]) / MiB / (Number(done[2]) / 1000)
  log(`${label}: B echo p99 ${fmt(percentile(idleMs, 99), 2)} ms (A idle) -> ${fmt(percentile(bulkMs, 99), 2)} ms (A bulk, ${fmt(bulkMiBps)} MiB/s)`)

  bSocket.destroy()
  await gw!.proc.stop()
  await relay.stop()
  return { label, idleMs, bulkMs, bulkMiBps, bulkErrors: Number(done[3]) }
}

// ---------------------------------------------------------------------------------------------

const render = (o: {
  readonly command: string
  readonly go: string
  readonly notes: ReadonlyArray<string>
  readonly scale: ScaleResult | undefined
  readonly fair: ReadonlyArray<FairResult>
}): string => {
  const lines: Array<string> = []
  lines.push(`### Run of ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`, "")
  lines.push(`- Machine: ${machine()}; ${o.go}`)
  lines.push(`- Command: \`${o.command}\``)
  for (const n of o.notes) lines.push(`- ${n}`)
  lines.push("")
  const s = o.scale
  if (s !== undefined) {
    const kib = (x: number) => fmt(x, 1)
    const n = SESSIONS - s.sessionFailures
    lines.push(markdownTable(["scale", "value"], [
      ["relay RSS idle (MiB)", fmt(s.rssIdleKiB / 1024)],
      [`relay RSS with ${TUNNELS} tunnels (MiB)`, fmt(s.rssTunnelsKiB / 1024)],
      [`relay RSS with ${TUNNELS} tunnels + ${n} sessions (MiB)`, fmt(s.rssSessionsKiB / 1024)],
      ["KiB per tunnel", kib((s.rssTunnelsKiB - s.rssIdleKiB) / TUNNELS)],
      ["KiB per session", kib((s.rssSessionsKiB - s.rssTunnelsKiB) / Math.max(1, n))],
      ["relay RSS after the sessions closed (MiB)", fmt(s.rssAfterKiB / 1024)],
      ["relay fds: idle / tunnels / sessions / after", `${s.fds.idle} / ${s.fds.tunnels} / ${s.fds.sessions} / ${s.fds.after}`],
      [`tunnel setup (${TUNNELS}, ${GATEWAY_PROCS} gateway processes) (s)`, fmt(s.tunnelSetupSeconds)],
      [`session setup, ${n} sessions, ${DIAL_CONCURRENCY} dialing at once (sessions/s)`, fmt(n / s.sessionSetupSeconds, 0)],
      ["session setup rate per tenth of the ramp (sessions/s)", s.rampRates.map((r) => fmt(r, 0)).join(", ")],
      ["sessions failed", String(s.sessionFailures)],
      [`64-byte echo on an idle session, ${n} open (p50 / p99 ms, ${s.echoMs.length} over ${s.echoSessions} sessions)`,
        `${fmt(percentile(s.echoMs, 50), 2)} / ${fmt(percentile(s.echoMs, 99), 2)}`]
    ]))
    lines.push("")
  }
  if (o.fair.length > 0) {
    lines.push(markdownTable(
      ["fairness", "B echo p50 / p99, A idle (ms)", "B echo p50 / p99, A bulk (ms)", `A throughput, ${BULK_SESSIONS} sessions (MiB/s)`],
      o.fair.map((f) => [
        f.label,
        `${fmt(percentile(f.idleMs, 50), 2)} / ${fmt(percentile(f.idleMs, 99), 2)}`,
        `${fmt(percentile(f.bulkMs, 50), 2)} / ${fmt(percentile(f.bulkMs, 99), 2)}`,
        `${fmt(f.bulkMiBps)}${f.bulkErrors > 0 ? ` (${f.bulkErrors} errors)` : ""}`
      ])
    ))
    lines.push("")
  }
  return lines.join("\n")
}

const main = async (): Promise<number> => {
  installExitHooks()
  const runner: RelayRunner = args["relay-runner"] === "tsx" ? { kind: "tsx" } : { kind: "dist", bin: await buildRelay() }
  const [gatewayBin, go, help] = await Promise.all([buildGo("gateway"), goVersion(), relayStartHelp(runner)])
  const flags = optionalFlags(help)
  log(`built; ${flags.notes.join("; ")}`)
  const notes: Array<string> = [...flags.notes]
  // A session costs the relay one fd (the client socket; its channel rides the gateway's SSH
  // socket), a tunnel one; this process holds one per session too. Children inherit this limit.
  const fdLimit = Number(fs.readFileSync("/proc/self/limits", "utf8").match(/^Max open files\s+(\d+)/m)?.[1] ?? "0")
  const fdsNeeded = SESSIONS + TUNNELS + 200
  notes.push(`fd limit (soft, inherited by the relay): ${fdLimit}; the relay needs about ${fdsNeeded}`)
  if (phases.has("scale") && fdLimit > 0 && fdLimit < fdsNeeded) {
    log(`fd limit ${fdLimit} is below the ${fdsNeeded} needed; raise it (ulimit -n) or lower --sessions`)
    return 1
  }

  const m = await makeLoadMaterial()
  try {
    let scaleResult: ScaleResult | undefined
    if (phases.has("scale")) scaleResult = await scale(m, gatewayBin, runner, flags.limitArgs)
    const fair: Array<FairResult> = []
    if (phases.has("fair")) {
      const orgs = { a: await m.createOrg("org-a"), b: await m.createOrg("org-b") }
      const settings = flags.fairShare === undefined
        ? [{ label: "fair share flag absent (TODO)", args: [] as ReadonlyArray<string> }]
        : [true, false].map((on) => ({ label: `--fair-share=${on}`, args: [flags.fairShare!(on)] }))
      for (const s of settings) fair.push(await fairness(m, gatewayBin, runner, [...flags.limitArgs, ...s.args], s.label, orgs))
    }
    const section = render({
      command: `npm run load${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
      go,
      notes,
      scale: scaleResult,
      fair
    })
    process.stdout.write(`\n${section}\n`)
    if (args["no-write"]) log("--no-write: docs/load.md left alone")
    else {
      writeSection(LOAD_DOC, "load", section)
      log(`wrote ${path.relative(repoRoot, LOAD_DOC)}`)
    }
    return 0
  } finally {
    await stopAll()
    await m.close()
  }
}

runToExit("load", main)
