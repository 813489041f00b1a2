/**
 * Our relay for the load test and the soak: an `infisical relay start` subprocess registering with
 * the load material's control plane, with its status server on so its gauges (tunnels, active
 * sessions) can be read from /metrics, and its pid for RSS and fd counts from /proc.
 *
 * Flags that only some builds have (the fair share and the per-IP limits) are passed only when
 * `relay start --help` lists them: `optionalFlags` reads the help once and keeps what it knows.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"
import { Effect } from "effect"
import { freePort } from "../../src/dev/DevCommand.ts"
import { repoRoot } from "./build.ts"
import type { LoadMaterial } from "./loadMaterial.ts"
import { Proc } from "./procs.ts"

const execFileP = promisify(execFile)

/** `dist`: node <compiled bin.js> (no tsx loader thread in the RSS); `tsx`: the sources, as tests run them. */
export type RelayRunner = { readonly kind: "dist"; readonly bin: string } | { readonly kind: "tsx" }

const entry = (runner: RelayRunner): ReadonlyArray<string> =>
  runner.kind === "dist" ? [runner.bin] : ["--import", "tsx", path.join(repoRoot, "src", "bin.ts")]

/** The text of `relay start --help` (the options this build accepts). */
export const relayStartHelp = async (runner: RelayRunner): Promise<string> => {
  const { stdout, stderr } = await execFileP(process.execPath, [...entry(runner), "relay", "start", "--help"], {
    cwd: repoRoot,
    maxBuffer: 4 << 20,
    timeout: 60_000
  })
  return stdout + stderr
}

/** Whether the help text lists `--<name>`. */
export const hasFlag = (help: string, name: string): boolean => new RegExp(`--${name}(?![\\w-])`).test(help)

/**
 * Limits (src/relay/Limits.ts) a load generator dialing everything from 127.0.0.1 would hit: the
 * per-IP accept rates (20/s SSH, 500/s TLS by default) and the per-gateway session cap (2,000),
 * for the flags this build has. The global caps' defaults (10,000 tunnels, 50,000 sessions,
 * 20,000 TLS connections, ...) are above any load this runs.
 */
const GENEROUS_LIMITS: ReadonlyArray<readonly [string, string]> = [
  ["tls-accept-rate", "1000000"],
  ["ssh-accept-rate", "1000000"],
  ["max-sessions-per-gateway", "1000000"]
]

export interface OptionalFlags {
  readonly limitArgs: ReadonlyArray<string>
  /** `--fair-share=<on>` when the build has the flag, else undefined. */
  readonly fairShare: ((on: boolean) => string) | undefined
  /** Human notes: what was passed, what the build lacks. */
  readonly notes: ReadonlyArray<string>
}

export const optionalFlags = (help: string): OptionalFlags => {
  const present = GENEROUS_LIMITS.filter(([name]) => hasFlag(help, name))
  const limitArgs = present.map(([name, value]) => `--${name}=${value}`)
  // Other limit-looking flags this list does not know: reported, so a new default cannot skew a run unseen.
  const known = new Set(GENEROUS_LIMITS.map(([name]) => name))
  const unknown = [...help.matchAll(/--((?:max-[\w-]+)|(?:[\w-]+-rate))(?![\w-])/g)]
    .map((m) => m[1]!)
    .filter((name, i, all) => !known.has(name) && all.indexOf(name) === i)
  const fairShare = hasFlag(help, "fair-share") ? (on: boolean) => `--fair-share=${on}` : undefined
  const notes = [
    limitArgs.length > 0 ? `limits raised: ${limitArgs.join(" ")}` : "no per-IP limit flags in this build (nothing to raise)",
    ...(unknown.length > 0 ? [`limit flags left at their defaults: ${unknown.map((n) => `--${n}`).join(" ")}`] : []),
    ...(fairShare === undefined ? ["TODO: this build has no --fair-share flag; the fairness rows ran without it"] : [])
  ]
  return { limitArgs, fairShare, notes }
}

export interface LoadRelay {
  readonly proc: Proc
  readonly pid: number
  readonly sshPort: number
  readonly tlsPort: number
  /** Sum of each metric over its series, from the status server's /metrics. */
  metrics(): Promise<ReadonlyMap<string, number>>
  /** Polls /metrics until `metric` reaches `value` (bounded). */
  waitMetric(metric: string, value: number, timeoutMs: number): Promise<void>
  stop(): Promise<void>
}

let serial = 0

export const startLoadRelay = async (
  m: LoadMaterial,
  o: { readonly runner: RelayRunner; readonly args?: ReadonlyArray<string>; readonly label?: string }
): Promise<LoadRelay> => {
  const home = path.join(m.dir, `relay-home-${serial++}`)
  fs.mkdirSync(home, { recursive: true })
  const statusPort = await Effect.runPromise(freePort)
  const proc = new Proc(o.label ?? "relay", process.execPath, [
    ...entry(o.runner),
    "relay",
    "start",
    "--type=instance",
    "--host=127.0.0.1",
    `--name=${m.relayName}`,
    `--domain=${m.controlPlaneUrl}`,
    "--ssh-port=0",
    "--tls-port=0",
    "--listen-host=127.0.0.1",
    `--status-addr=127.0.0.1:${statusPort}`,
    ...(o.args ?? [])
  ], {
    cwd: repoRoot,
    env: {
      PATH: process.env["PATH"] ?? "",
      HOME: home,
      INFISICAL_RELAY_STATE_DIR: path.join(home, "state"),
      INFISICAL_RELAY_AUTH_SECRET: m.relaySecret
    }
  })
  try {
    const tls = proc.waitFor(/TLS server listening on 127\.0\.0\.1:(\d+) for clients/, { timeoutMs: 60_000 })
    const ssh = proc.waitFor(/SSH server listening on 127\.0\.0\.1:(\d+) for gateways/, { timeoutMs: 60_000 })
    await proc.waitFor(/Relay server started successfully/, { timeoutMs: 60_000 })
    const tlsPort = Number((await tls)[1])
    m.setRelayTlsPort(tlsPort)
    const metrics = async (): Promise<ReadonlyMap<string, number>> => {
      const text = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`, { signal: AbortSignal.timeout(10_000) })).text()
      return parseMetrics(text)
    }
    return {
      proc,
      pid: proc.pid,
      sshPort: Number((await ssh)[1]),
      tlsPort,
      metrics,
      waitMetric: async (metric, value, timeoutMs) => {
        const deadline = Date.now() + timeoutMs
        let last: number | string | undefined
        while (Date.now() < deadline) {
          // A relay busy closing thousands of sessions may answer late: that is "not yet".
          last = await metrics().then((all) => all.get(metric), (err: Error) => `unreadable (${err.message})`)
          if (last === value) return
          if (!proc.alive) break
          await new Promise((resolve) => setTimeout(resolve, 250))
        }
        throw new Error(`${metric} is ${last}, want ${value} (after ${timeoutMs} ms)\n${proc.tail()}`)
      },
      stop: async () => {
        await proc.stop("SIGTERM", 10_000)
      }
    }
  } catch (err) {
    await proc.stop("SIGKILL")
    throw err
  }
}

/** Prometheus text format -> metric name -> sum over its series (comments and NaN skipped). */
export const parseMetrics = (text: string): ReadonlyMap<string, number> => {
  const out = new Map<string, number>()
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line)
    if (!m) continue
    const value = Number(m[2])
    if (!Number.isFinite(value)) continue
    out.set(m[1]!, (out.get(m[1]!) ?? 0) + value)
  }
  return out
}

/** Open file descriptors of a process (its /proc/<pid>/fd entries). */
export const fdCount = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length
