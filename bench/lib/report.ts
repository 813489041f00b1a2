/**
 * The results table (markdown) and docs/benchmarks.md. The generated part of the doc sits between
 * two marker comments; anything outside them (hand-written notes) is kept when the doc is
 * regenerated.
 */
import * as fs from "node:fs"
import type { BulkResult, MemoryResult, RateResult } from "./measure.ts"
import type { ProfileSummary } from "./profile.ts"

export type SubjectKind = "direct" | "go" | "ours"

export interface SubjectResults {
  down?: BulkResult | undefined
  up?: BulkResult | undefined
  parallel?: BulkResult | undefined
  rate?: RateResult | undefined
  serial?: { readonly p50: number; readonly p99: number } | undefined
  delayed?: BulkResult | undefined
  memory?: MemoryResult | undefined
  /** measurement name -> first line of its error */
  readonly errors: Record<string, string>
}

export interface SshLayerResults {
  down?: BulkResult | undefined
  up?: BulkResult | undefined
  readonly errors: Record<string, string>
}

export interface Meta {
  readonly date: string
  readonly cpu: string
  readonly cores: number
  readonly os: string
  readonly memGiB: number
  readonly node: string
  readonly go: string
  readonly xcrypto: string
  readonly relayRunner: string
  readonly command: string
  readonly durationS: number
  readonly settings: string
  /** 1-minute load average before and after the run (other work on the machine skews throughput) */
  readonly load: readonly [number, number]
}

export interface Results {
  readonly meta: Meta
  readonly subjects: Record<SubjectKind, SubjectResults>
  readonly ssh: Record<"go" | "ours", SshLayerResults>
  readonly profile?: ProfileSummary & { readonly note: string } | undefined
  readonly profileSessions?: ProfileSummary & { readonly note: string } | undefined
}

type Better = "higher" | "lower"
type Value = number | "error" | undefined

interface Row {
  readonly metric: string
  readonly better: Better
  readonly digits?: number
  readonly cells: Record<SubjectKind, Value>
}

/** A measured value, "error" when its measurement failed, undefined when not applicable. */
const cell = (r: { readonly errors: Record<string, string> }, key: string, value: number | undefined): Value =>
  value !== undefined ? value : r.errors[key] !== undefined ? "error" : undefined

export const rows = (res: Results): ReadonlyArray<Row> => {
  const s = res.subjects
  const row = (
    metric: string,
    better: Better,
    key: string,
    get: (r: SubjectResults) => number | undefined,
    digits?: number,
    withDirect = true
  ): Row => ({
    metric,
    better,
    ...(digits === undefined ? {} : { digits }),
    cells: {
      direct: withDirect ? cell(s.direct, key, get(s.direct)) : undefined,
      go: cell(s.go, key, get(s.go)),
      ours: cell(s.ours, key, get(s.ours))
    }
  })
  const sshRow = (metric: string, better: Better, key: "down" | "up", get: (r: SshLayerResults) => number | undefined): Row => ({
    metric,
    better,
    cells: { direct: undefined, go: cell(res.ssh.go, key, get(res.ssh.go)), ours: cell(res.ssh.ours, key, get(res.ssh.ours)) }
  })
  return [
    row("1 session, gateway→client (MiB/s)", "higher", "down", (r) => r.down?.mibps),
    row("1 session, client→gateway (MiB/s)", "higher", "up", (r) => r.up?.mibps),
    row("relay CPU s/GiB, gateway→client", "lower", "down", (r) => r.down?.cpuPerGiB, 2, false),
    row("relay CPU s/GiB, client→gateway", "lower", "up", (r) => r.up?.cpuPerGiB, 2, false),
    row("8 sessions, gateway→client aggregate (MiB/s)", "higher", "parallel", (r) => r.parallel?.mibps),
    row("relay CPU s/GiB, 8 sessions", "lower", "parallel", (r) => r.parallel?.cpuPerGiB, 2, false),
    row("new sessions/s, concurrency 64 (outer TLS + channel + inner TLS + PONG)", "higher", "rate", (r) => r.rate?.perSecond),
    row("relay CPU ms per new session", "lower", "rate", (r) => r.rate?.cpuMsPerSession, 2, false),
    row("ping latency p50, one at a time (ms)", "lower", "serial", (r) => r.serial?.p50, 2),
    row("ping latency p99, one at a time (ms)", "lower", "serial", (r) => r.serial?.p99, 2),
    row("ping latency p50 at concurrency 64 (ms)", "lower", "rate", (r) => r.rate?.p50),
    row("ping latency p99 at concurrency 64 (ms)", "lower", "rate", (r) => r.rate?.p99),
    row("relay RSS idle (MiB)", "lower", "memory", (r) => (r.memory ? r.memory.idleKiB / 1024 : undefined), 1, false),
    row(`KiB per idle gateway tunnel`, "lower", "memory", (r) => r.memory?.perTunnelKiB, 1, false),
    row(`KiB per idle session`, "lower", "memory", (r) => r.memory?.perSessionKiB, 1, false),
    row("gateway→client with 50 ms RTT gateway↔relay (MiB/s)", "higher", "delayed", (r) => r.delayed?.mibps),
    sshRow("SSH layer alone: channel gateway→server (MiB/s)", "higher", "down", (r) => r.down?.mibps),
    sshRow("SSH layer alone: channel server→gateway (MiB/s)", "higher", "up", (r) => r.up?.mibps),
    sshRow("SSH layer alone: server CPU s/GiB, gateway→server", "lower", "down", (r) => r.down?.cpuPerGiB),
    sshRow("SSH layer alone: server CPU s/GiB, server→gateway", "lower", "up", (r) => r.up?.cpuPerGiB)
  ]
}

const fmt = (v: Value, digits?: number): string => {
  if (v === undefined) return "—"
  if (v === "error") return "error"
  if (digits !== undefined) return v.toFixed(digits)
  const a = Math.abs(v)
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2)
}

export interface Verdict {
  readonly ratio: number | undefined
  /** > 0: ours better, < 0: ours worse, 0: within 5 % */
  readonly sign: -1 | 0 | 1 | undefined
}

export const verdict = (row: Row): Verdict => {
  const { go, ours } = row.cells
  if (typeof go !== "number" || typeof ours !== "number" || go === 0) return { ratio: undefined, sign: undefined }
  const ratio = ours / go
  const goodness = row.better === "higher" ? ratio : 1 / ratio
  return { ratio, sign: goodness >= 1.05 ? 1 : goodness <= 1 / 1.05 ? -1 : 0 }
}

export const table = (res: Results): string => {
  const lines = [
    "| metric | direct (no relay) | Go reference relay | ours | ours/Go | |",
    "| --- | ---: | ---: | ---: | ---: | --- |"
  ]
  for (const r of rows(res)) {
    const v = verdict(r)
    const mark = v.sign === undefined ? "" : v.sign > 0 ? "better" : v.sign < 0 ? "**worse**" : "≈"
    lines.push(
      `| ${r.metric} | ${fmt(r.cells.direct, r.digits)} | ${fmt(r.cells.go, r.digits)} | ${fmt(r.cells.ours, r.digits)} | ${
        v.ratio === undefined ? "—" : v.ratio.toFixed(2)
      } | ${mark} |`
    )
  }
  return lines.join("\n")
}

const errorLines = (res: Results): Array<string> => {
  const out: Array<string> = []
  for (const [subject, r] of Object.entries(res.subjects)) {
    for (const [what, err] of Object.entries(r.errors)) out.push(`- ${subject} / ${what}: ${err}`)
  }
  for (const [server, r] of Object.entries(res.ssh)) {
    for (const [what, err] of Object.entries(r.errors)) out.push(`- ssh layer ${server} / ${what}: ${err}`)
  }
  for (const [subject, r] of Object.entries(res.subjects)) {
    if (r.rate !== undefined && r.rate.errors > 0) {
      out.push(`- ${subject} / session rate: ${r.rate.errors} failed sessions (first: ${r.rate.firstError ?? "?"})`)
    }
  }
  return out
}

const profileSection = (p: ProfileSummary & { readonly note: string }): string => {
  const lines = [
    `${p.note} Busy CPU in the window: ${(p.busyMs / 1000).toFixed(2)} s.`,
    "",
    "| area | self % |",
    "| --- | ---: |",
    ...p.areas.slice(0, 8).map((a) => `| ${a.area} | ${a.percent.toFixed(1)} |`),
    "",
    "| top self-time functions | where | mostly called from | self % |",
    "| --- | --- | --- | ---: |",
    ...p.top.map((e) => `| \`${e.name}\` | ${e.where} | ${e.via} | ${e.percent.toFixed(1)} |`)
  ]
  return lines.join("\n")
}

export const generated = (res: Results): string => {
  const m = res.meta
  const losses = rows(res).filter((r) => verdict(r).sign === -1)
  const errors = errorLines(res)
  return [
    `Generated by \`${m.command}\` on ${m.date} in ${Math.round(m.durationS)} s.`,
    "",
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB RAM, ${m.os}; Node ${m.node}; ${m.go}, x/crypto ${m.xcrypto}. ` +
      `Load average (1 min) ${m.load[0].toFixed(2)} before, ${m.load[1].toFixed(2)} after. ` +
      `Our relay ran as \`${m.relayRunner}\`. Settings: ${m.settings}.`,
    "",
    table(res),
    "",
    "Ratios are ours / Go reference; \"better\"/\"worse\" marks a difference of more than 5 % in the",
    "direction that matters (throughput and rate: higher is better; CPU, latency, memory: lower is better).",
    "",
    "### Where ours loses (this run)",
    "",
    ...(losses.length === 0
      ? ["Nowhere by more than 5 %."]
      : losses.map((r) => `- ${r.metric}: ${fmt(r.cells.ours, r.digits)} vs Go ${fmt(r.cells.go, r.digits)} (ours/Go ${verdict(r).ratio!.toFixed(2)})`)),
    ...(errors.length === 0 ? [] : ["", "### Failures in this run", "", ...errors]),
    ...(res.profile === undefined ? [] : ["", "### CPU profile of our relay: one session's byte path", "", profileSection(res.profile)]),
    ...(res.profileSessions === undefined ? [] : ["", "### CPU profile of our relay: new sessions", "", profileSection(res.profileSessions)])
  ].join("\n")
}

const BEGIN = "<!-- bench:begin (generated by npm run bench; edits inside are overwritten) -->"
const END = "<!-- bench:end -->"

/** Writes the generated block into `file`, keeping whatever is outside the markers. */
export const writeDoc = (file: string, res: Results, template: string): void => {
  const block = `${BEGIN}\n${generated(res)}\n${END}`
  let text = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : template
  if (!text.includes(BEGIN.slice(0, 20)) || !text.includes(END)) text = template
  const start = text.indexOf(BEGIN.slice(0, 20))
  const end = text.indexOf(END) + END.length
  fs.writeFileSync(file, text.slice(0, start) + block + text.slice(end))
}

export const MARKERS = `${BEGIN}\n${END}`
