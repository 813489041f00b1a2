/**
 * `npm run bench`: our relay against the Go reference relay (bench/go-relay, Infisical's data
 * path on x/crypto/ssh) and against a direct client -> gateway connection (no relay: the limit),
 * in one run, on identical certificates from src/dev's control plane. Prints a markdown table and
 * writes it into docs/benchmarks.md.
 *
 *   npm run bench [-- --quick] [--reps N] [--only perf,memory,ssh,profile]
 *                 [--subjects go,ours,direct] [--relay-runner dist|tsx] [--relay-bin PATH] [--no-write]
 *                 [--keep-profile FILE]
 *
 * --relay-bin runs a given compiled bin.js (e.g. a build of another commit) instead of building src/.
 * --keep-profile copies the relay's .cpuprofile there (open it in Chrome DevTools or speedscope).
 *
 * Our relay is always a `relay start` subprocess (its pid is what CPU and RSS are read from); the
 * harness process holds the control plane and the client. Every child process is killed at the
 * end, also on failure or Ctrl-C.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { buildGo, buildRelay, goVersion, repoRoot } from "./lib/build.ts"
import type { Target } from "./lib/client.ts"
import { bulkDown, bulkUp } from "./lib/client.ts"
import { makeMaterial, type Material } from "./lib/material.ts"
import {
  bulk,
  combineBulk,
  combineRate,
  combineSerial,
  GiB,
  memory,
  MiB,
  parallelDown,
  type RateResult,
  serialPings,
  sessionRate,
  type Settings,
  sshLayer
} from "./lib/measure.ts"
import { installExitHooks, type Proc, runToExit, stopAll } from "./lib/procs.ts"
import { summarizeProfile } from "./lib/profile.ts"
import { MARKERS, type Results, type SshLayerResults, type SubjectKind, type SubjectResults, table, writeDoc } from "./lib/report.ts"
import {
  type Gateway,
  type OurRelayOptions,
  type Relay,
  startDelayProxy,
  startGateway,
  startGoRelay,
  startOurRelay,
  startSshServer
} from "./lib/subjects.ts"

// ---------------------------------------------------------------------------------------------
// options

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(`--${name}`)
const option = (name: string): string | undefined => {
  const eq = argv.find((a) => a.startsWith(`--${name}=`))
  if (eq !== undefined) return eq.slice(name.length + 3)
  const i = argv.indexOf(`--${name}`)
  return i === -1 ? undefined : argv[i + 1]
}
const list = (name: string, all: ReadonlyArray<string>) => option(name)?.split(",").map((x) => x.trim()) ?? all

const quick = flag("quick")
const settings: Settings = {
  reps: Number(option("reps") ?? (quick ? 1 : 3)),
  seconds: quick ? 0.6 : 1.5,
  rateSeconds: quick ? 1.5 : 3,
  concurrency: 64,
  serialPings: quick ? 40 : 300,
  parallelSessions: 8,
  idleTunnels: quick ? 100 : 500,
  idleSessions: quick ? 200 : 1000
}
const phases = new Set(list("only", ["perf", "memory", "ssh", "profile"]))
const subjects = list("subjects", ["go", "ours", "direct"]) as ReadonlyArray<SubjectKind>
const runnerKind = option("relay-runner") ?? "dist"
const relayBinOption = option("relay-bin")
const write = !flag("no-write")
const keepProfile = option("keep-profile")
const DELAY_MS = 25

// ---------------------------------------------------------------------------------------------
// progress

const t0 = performance.now()
const loadBefore = os.loadavg()[0]!
const stamp = () => {
  const s = Math.round((performance.now() - t0) / 1000)
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
}
const log = (msg: string) => process.stderr.write(`[${stamp()}] ${msg}\n`)

/** Runs one measurement; a failure is recorded (first line) and the run goes on. */
const step = async <A>(
  r: { readonly errors: Record<string, string> },
  who: string,
  key: string,
  f: () => Promise<A>,
  show: (a: A) => string
): Promise<A | undefined> => {
  const start = performance.now()
  try {
    const a = await f()
    log(`${who}: ${key} ${show(a)} (${((performance.now() - start) / 1000).toFixed(1)} s)`)
    return a
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    r.errors[key] = message.split("\n")[0]!
    log(`${who}: ${key} FAILED: ${message}`)
    return undefined
  }
}

const rate = (x: { mibps: number; cpuPerGiB: number | undefined; samples: ReadonlyArray<number> }) =>
  `${x.mibps.toFixed(1)} MiB/s [${x.samples.map((v) => v.toFixed(0)).join(", ")}]` +
  (x.cpuPerGiB === undefined ? "" : `, ${x.cpuPerGiB.toFixed(2)} CPU s/GiB`)

// ---------------------------------------------------------------------------------------------
// phases

interface Bins {
  readonly goRelay: string
  readonly gateway: string
  readonly goSsh: string
  readonly ourRelay: OurRelayOptions["runner"]
}

const startRelay = (kind: "go" | "ours", m: Material, bins: Bins, cpuProfDir?: string): Promise<Relay> =>
  kind === "go"
    ? startGoRelay(m, bins.goRelay)
    : startOurRelay(m, { runner: bins.ourRelay, ...(cpuProfDir === undefined ? {} : { cpuProfDir }) })

const relayTarget = async (m: Material, relay: Relay, gatewayId: string): Promise<Target> => ({
  kind: "relay",
  port: relay.tlsPort,
  gatewayId,
  contexts: await m.clientFor(gatewayId)
})

/** A subject up for the perf phase: where a client dials it, directly and through the delay proxy. */
interface PerfSubject {
  readonly kind: SubjectKind
  readonly target: Target
  readonly delayed: Target
  /** the relay process whose CPU is charged (none for the direct connection) */
  readonly meter: number | undefined
}

const setUpPerf = async (kind: SubjectKind, m: Material, bins: Bins, procs: Array<Proc>): Promise<PerfSubject> => {
  if (kind === "direct") {
    const gw = await startGateway(m, bins.gateway, { label: "gateway (direct)", connections: 0, listen: true })
    procs.push(gw.proc)
    const proxy = await startDelayProxy(gw.directPort!, DELAY_MS)
    procs.push(proxy.proc)
    const contexts = await m.clientFor("direct")
    return {
      kind,
      target: { kind: "direct", port: gw.directPort!, contexts },
      delayed: { kind: "direct", port: proxy.port, contexts },
      meter: undefined
    }
  }
  const relay = await startRelay(kind, m, bins)
  procs.push(relay.proc)
  const gw = await startGateway(m, bins.gateway, { label: `gateway (${kind})`, sshAddr: `127.0.0.1:${relay.sshPort}`, connections: 1 })
  procs.push(gw.proc)
  const proxy = await startDelayProxy(relay.sshPort, DELAY_MS)
  procs.push(proxy.proc)
  const slow = await startGateway(m, bins.gateway, { label: `delayed gateway (${kind})`, sshAddr: `127.0.0.1:${proxy.port}`, connections: 1 })
  procs.push(slow.proc)
  await relay.waitTunnels(2)
  return {
    kind,
    target: await relayTarget(m, relay, gw.ids[0]!),
    delayed: await relayTarget(m, relay, slow.ids[0]!),
    meter: relay.proc.pid
  }
}

/**
 * Throughput, session rate, latency and the 50 ms RTT transfer. Every subject is up at once (the
 * others idle while one is measured) and the repetitions are interleaved: round i measures each
 * subject once, in an order that alternates between rounds, so a change of load on this shared
 * machine falls on all subjects instead of on whichever happened to run then.
 */
const perf = async (kinds: ReadonlyArray<SubjectKind>, m: Material, bins: Bins, res: Record<SubjectKind, SubjectResults>): Promise<void> => {
  const procs: Array<Proc> = []
  try {
    const up: Array<PerfSubject> = []
    for (const kind of kinds) {
      try {
        up.push(await setUpPerf(kind, m, bins, procs))
        log(`${kind}: up`)
      } catch (err) {
        res[kind].errors["setup"] = (err instanceof Error ? err.message : String(err)).split("\n")[0]!
        log(`${kind}: setup FAILED: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    const once = { ...settings, reps: 1, serialPings: Math.ceil(settings.serialPings / settings.reps) }
    const interleaved = async <A>(
      key: "down" | "up" | "parallel" | "rate" | "serial" | "delayed",
      measure: (s: PerfSubject) => Promise<A>,
      combine: (parts: ReadonlyArray<A>) => SubjectResults[typeof key],
      show: (a: A) => string
    ) => {
      const parts = new Map<SubjectKind, Array<A>>(up.map((s) => [s.kind, []]))
      for (let round = 0; round < settings.reps; round++) {
        for (const s of round % 2 === 0 ? up : [...up].reverse()) {
          const r = res[s.kind]
          if (r.errors[key] !== undefined) continue
          const a = await step(r, `${s.kind} (${round + 1}/${settings.reps})`, key, () => measure(s), show)
          if (a !== undefined) parts.get(s.kind)!.push(a)
        }
      }
      for (const s of up) if (res[s.kind].errors[key] === undefined) res[s.kind][key] = combine(parts.get(s.kind)!) as never
    }
    const showRate = (x: RateResult) =>
      `${x.perSecond.toFixed(0)}/s` + (x.cpuMsPerSession === undefined ? "" : `, ${x.cpuMsPerSession.toFixed(2)} CPU ms/session`) +
      `, p50 ${x.p50.toFixed(1)} ms, p99 ${x.p99.toFixed(1)} ms, ${x.errors} errors`
    await interleaved("down", (s) => bulk("down", s.target, s.meter, once), combineBulk, rate)
    await interleaved("up", (s) => bulk("up", s.target, s.meter, once), combineBulk, rate)
    await interleaved("parallel", (s) => parallelDown(s.target, s.meter, once), combineBulk, rate)
    await interleaved("rate", (s) => sessionRate(s.target, s.meter, once), combineRate, showRate)
    await interleaved("serial", (s) => serialPings(s.target, once), combineSerial, (x) => `p50 ${x.p50.toFixed(2)} ms, p99 ${x.p99.toFixed(2)} ms`)
    await interleaved("delayed", (s) =>
      bulk("down", s.delayed, s.meter, once, { warmBytes: 64 * MiB, minBytes: 128 * MiB, maxBytes: GiB, seconds: settings.seconds * 1.5 }), combineBulk, rate)
  } finally {
    await Promise.all(procs.reverse().map((p) => p.stop()))
  }
}

/** RSS of a fresh relay: idle, with N idle tunnels, with M idle sessions. */
const mem = async (kind: "go" | "ours", m: Material, bins: Bins, r: SubjectResults): Promise<void> => {
  const procs: Array<Proc> = []
  try {
    const relay = await startRelay(kind, m, bins)
    procs.push(relay.proc)
    r.memory = await step(r, kind, "memory", () =>
      memory(relay.proc, settings, async () => {
        const gw: Gateway = await startGateway(m, bins.gateway, {
          label: `${settings.idleTunnels} gateways (${kind})`,
          sshAddr: `127.0.0.1:${relay.sshPort}`,
          connections: settings.idleTunnels
        })
        procs.push(gw.proc)
        await relay.waitTunnels(settings.idleTunnels)
        return Promise.all(gw.ids.slice(0, 4).map((id) => relayTarget(m, relay, id)))
      }), (x) =>
      `idle ${(x.idleKiB / 1024).toFixed(1)} MiB, +${settings.idleTunnels} tunnels ${(x.tunnelsKiB / 1024).toFixed(1)} MiB ` +
      `(${x.perTunnelKiB.toFixed(1)} KiB each), +${settings.idleSessions} sessions ${(x.sessionsKiB / 1024).toFixed(1)} MiB ` +
      `(${x.perSessionKiB.toFixed(1)} KiB each)`)
  } catch (err) {
    r.errors["memory"] = (err instanceof Error ? err.message : String(err)).split("\n")[0]!
    log(`${kind}: memory setup FAILED: ${err instanceof Error ? err.message : String(err)}`)
  } finally {
    await Promise.all(procs.reverse().map((p) => p.stop()))
  }
}

/** Raw SSH channel throughput: our SSH server vs x/crypto's, same gateway, no TLS side. */
const ssh = async (kind: "go" | "ours", m: Material, bins: Bins, r: SshLayerResults): Promise<void> => {
  const procs: Array<Proc> = []
  const who = `ssh layer (${kind})`
  try {
    const server = await startSshServer(m, kind, bins.goSsh)
    procs.push(server.proc)
    const gw = await startGateway(m, bins.gateway, { label: `gateway (${who})`, sshAddr: `127.0.0.1:${server.port}`, connections: 1 })
    procs.push(gw.proc)
    await server.proc.waitFor(/^GATEWAY /)
    r.down = await step(r, who, "down", () => sshLayer(server.proc, "DOWN", settings), rate)
    r.up = await step(r, who, "up", () => sshLayer(server.proc, "UP", settings), rate)
  } catch (err) {
    r.errors["setup"] = (err instanceof Error ? err.message : String(err)).split("\n")[0]!
    log(`${who}: setup FAILED: ${err instanceof Error ? err.message : String(err)}`)
  } finally {
    await Promise.all(procs.reverse().map((p) => p.stop()))
  }
}

/** `node --cpu-prof` on our relay while one session moves bytes down, then up; then while 64
 *  workers open sessions back to back. */
const profile = async (m: Material, bins: Bins, res: SubjectResults): Promise<Pick<Results, "profile" | "profileSessions">> => {
  const dir = path.join(m.dir, "cpu-prof")
  fs.mkdirSync(dir, { recursive: true })
  const procs: Array<Proc> = []
  const spawnedAt = performance.now()
  let window: [number, number]
  let sessionsWindow: [number, number]
  let bytes: number
  let sessions: number
  try {
    const relay = await startRelay("ours", m, bins, dir)
    procs.push(relay.proc)
    const gw = await startGateway(m, bins.gateway, { label: "gateway (profile)", sshAddr: `127.0.0.1:${relay.sshPort}`, connections: 1 })
    procs.push(gw.proc)
    await relay.waitTunnels(1)
    const target = await relayTarget(m, relay, gw.ids[0]!)
    const sized = (rate: number | undefined) => Math.round(Math.min(GiB, Math.max(64 * MiB, (rate ?? 100) * MiB * 2)) / MiB) * MiB
    const down = sized(res.down?.mibps)
    const up = sized(res.up?.mibps)
    const from = performance.now() - spawnedAt
    await bulkDown(target, down)
    await bulkUp(target, up)
    window = [from - 200, performance.now() - spawnedAt + 200]
    bytes = down + up
    const sessionsFrom = performance.now() - spawnedAt
    const rated = await sessionRate(target, undefined, { ...settings, reps: 1 })
    sessionsWindow = [sessionsFrom, performance.now() - spawnedAt]
    sessions = Math.round(rated.perSecond * settings.rateSeconds)
    await gw.proc.stop()
    const exit = await relay.proc.stop("SIGTERM", 15_000)
    if (exit.code !== 0) log(`profile: relay exited ${exit.code ?? exit.signal}`)
  } finally {
    await Promise.all(procs.reverse().map((p) => p.stop()))
  }
  const file = fs.readdirSync(dir).find((f) => f.endsWith(".cpuprofile"))
  if (file === undefined) throw new Error("the relay wrote no .cpuprofile")
  if (keepProfile !== undefined) {
    fs.copyFileSync(path.join(dir, file), keepProfile)
    log(`profile: kept as ${keepProfile} (byte path ${window.map(Math.round).join("-")} ms, sessions ${sessionsWindow.map(Math.round).join("-")} ms)`)
  }
  return {
    profile: {
      ...summarizeProfile(path.join(dir, file), window),
      note: `One session through our relay (compiled, \`node --cpu-prof\`), ${Math.round(bytes / MiB)} MiB in total, ` +
        `gateway→client then client→gateway; samples from the transfer window only, idle excluded.`
    },
    profileSessions: {
      ...summarizeProfile(path.join(dir, file), sessionsWindow),
      note: `The same relay while ${settings.concurrency} workers open backend-style ping sessions back to back ` +
        `(about ${sessions} sessions in ${settings.rateSeconds} s); idle excluded.`
    }
  }
}

// ---------------------------------------------------------------------------------------------
// main

const TEMPLATE = `# Benchmarks

Our relay against a faithful Go reference of Infisical's relay data path (\`bench/go-relay\`:
x/crypto/ssh server, io.Copy both ways, fixed 2 MiB channel window) and against a direct
client → gateway connection (no relay: the physical limit on this machine), in one run.
Run it with \`npm run bench\` (about 5 minutes on 2 cores); the table below is rewritten by it.

${MARKERS}
`

const debianVersion = (pkg: string): string => {
  try {
    return execFileSync("dpkg-query", ["-W", "-f=${Version}", pkg], { encoding: "utf8" }).trim() || "?"
  } catch {
    return "?"
  }
}

const main = async (): Promise<number> => {
  installExitHooks()
  log(`settings: ${JSON.stringify(settings)}; phases ${[...phases].join(",")}; subjects ${subjects.join(",")}`)
  const [goRelay, gateway, goSsh, relayBin, go] = await Promise.all([
    buildGo("go-relay"),
    buildGo("gateway"),
    buildGo("go-ssh-server"),
    runnerKind === "tsx" ? Promise.resolve("") : relayBinOption !== undefined ? Promise.resolve(path.resolve(relayBinOption)) : buildRelay(),
    goVersion()
  ])
  const bins: Bins = {
    goRelay,
    gateway,
    goSsh,
    ourRelay: runnerKind === "tsx" ? { kind: "tsx" } : { kind: "dist", bin: relayBin }
  }
  log("built")
  const m = await makeMaterial()
  log("certificates minted, control plane up")

  const empty = (): SubjectResults => ({ errors: {} })
  const res = {
    subjects: { direct: empty(), go: empty(), ours: empty() } as Record<SubjectKind, SubjectResults>,
    ssh: { go: { errors: {} }, ours: { errors: {} } } as Record<"go" | "ours", SshLayerResults>,
    profile: undefined as Results["profile"],
    profileSessions: undefined as Results["profileSessions"]
  }
  try {
    if (phases.has("perf")) await perf(subjects, m, bins, res.subjects)
    if (phases.has("memory")) {
      for (const kind of subjects) if (kind !== "direct") await mem(kind, m, bins, res.subjects[kind])
    }
    if (phases.has("ssh")) {
      for (const kind of ["go", "ours"] as const) if (subjects.includes(kind)) await ssh(kind, m, bins, res.ssh[kind])
    }
    if (phases.has("profile") && subjects.includes("ours")) {
      try {
        Object.assign(res, await profile(m, bins, res.subjects.ours))
        log("profile: done")
      } catch (err) {
        log(`profile FAILED: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
  } finally {
    await stopAll()
    await m.close()
  }

  const cpus = os.cpus()
  const results: Results = {
    ...res,
    meta: {
      date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      cpu: cpus[0]?.model.trim() ?? "?",
      cores: cpus.length,
      os: `${os.type()} ${os.release()}`,
      memGiB: Math.round(os.totalmem() / GiB),
      node: process.version,
      go,
      xcrypto: debianVersion("golang-golang-x-crypto-dev"),
      relayRunner: runnerKind === "tsx"
        ? "node bin/infisical.js relay start (tsx)"
        : "node <tsc build of src>/bin.js relay start (what bin/infisical.js runs after npm run build)",
      command: `npm run bench${argv.length === 0 ? "" : ` -- ${argv.join(" ")}`}`,
      durationS: (performance.now() - t0) / 1000,
      load: [loadBefore, os.loadavg()[0]!],
      settings: `${settings.reps} repetitions (median), ~${settings.seconds} s per bulk repetition, ` +
        `${settings.rateSeconds} s per rate repetition, ${settings.idleTunnels} idle tunnels, ${settings.idleSessions} idle sessions, ` +
        `${DELAY_MS} ms delay each way`
    }
  }
  process.stdout.write(`\n${table(results)}\n\n`)
  for (const [what, p] of [["byte path", results.profile], ["new sessions", results.profileSessions]] as const) {
    if (p === undefined) continue
    process.stdout.write(`profile, ${what} (${(p.busyMs / 1000).toFixed(2)} s busy):\n`)
    for (const a of p.areas.slice(0, 8)) process.stdout.write(`  ${a.percent.toFixed(1).padStart(5)} %  [${a.area}]\n`)
    for (const e of p.top) process.stdout.write(`  ${e.percent.toFixed(1).padStart(5)} %  ${e.name}  ${e.where}  <- ${e.via}\n`)
    process.stdout.write("\n")
  }
  const complete = phases.size === 4 && subjects.length === 3 && !quick
  if (write && complete) {
    const doc = path.join(repoRoot, "docs", "benchmarks.md")
    writeDoc(doc, results, TEMPLATE)
    log(`wrote ${path.relative(repoRoot, doc)}`)
  } else if (write) {
    log("partial or --quick run: docs/benchmarks.md left alone")
  }
  const failed = Object.values(results.subjects).some((r) => Object.keys(r.errors).length > 0) ||
    Object.values(results.ssh).some((r) => Object.keys(r.errors).length > 0)
  log(`done in ${stamp()}${failed ? " (with failures)" : ""}`)
  return failed ? 1 : 0
}

runToExit("bench", main)
