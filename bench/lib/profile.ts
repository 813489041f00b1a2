/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self time per function within a time
 * window, and rolled up by area (our SSH layer, the relay, Node's streams/TLS, Effect, GC, ...).
 */
import * as fs from "node:fs"
import * as path from "node:path"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}
interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

export interface ProfileEntry {
  readonly name: string
  readonly where: string
  /** the caller that accounts for most of this function's self time */
  readonly via: string
  readonly selfMs: number
  readonly percent: number
}

export interface ProfileSummary {
  /** busy (non-idle) ms in the window */
  readonly busyMs: number
  readonly top: ReadonlyArray<ProfileEntry>
  readonly areas: ReadonlyArray<{ readonly area: string; readonly selfMs: number; readonly percent: number }>
}

/** A readable location: repo-relative source path (compiled .js mapped back to src/*.ts), or node:... */
const where = (url: string, line: number): string => {
  if (url === "") return "(native)"
  if (url.startsWith("node:")) return url
  let p = url.startsWith("file://") ? decodeURIComponent(url.slice("file://".length)) : url
  // Compiled relay: name the source file; the line would be the compiled .js line, so leave it out.
  const dist = p.indexOf("/.cache/bench-dist/")
  if (dist !== -1) return `src/${p.slice(dist + "/.cache/bench-dist/".length).replace(/\.js$/, ".ts")}`
  const nm = p.lastIndexOf("/node_modules/")
  if (nm !== -1) {
    const rest = p.slice(nm + "/node_modules/".length).split("/")
    const pkg = rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!
    return `${pkg}/${path.basename(p)}`
  }
  return `${p}:${line + 1}`
}

const areaOf = (name: string, url: string): string => {
  if (name === "(garbage collector)") return "GC"
  if (name === "(program)") return "V8/Node native (program)"
  if (url === "" && (name === "writeBuffer" || name === "writev" || name.startsWith("write"))) {
    return "native stream writes (TLS encryption, syscalls)"
  }
  if (url === "") return "native builtins"
  if (url.startsWith("node:internal/crypto") || url === "node:crypto") return "node:crypto (HMAC, AES-CTR in OpenSSL)"
  if (url.includes("/src/ssh/") || url.includes("/bench-dist/ssh/")) return "src/ssh (our SSH layer)"
  if (url.includes("/bench-dist/") || url.includes("/src/")) return "src (relay, other)"
  if (url.includes("/node_modules/effect/") || url.includes("/node_modules/@effect/")) return "Effect runtime"
  if (url.startsWith("node:internal/streams") || url === "node:stream") return "node streams"
  if (url.includes("tls") || url.includes("_tls")) return "node TLS (JS side)"
  if (url.startsWith("node:")) return "node core JS (events, buffers, ticks, ...)"
  return "other JS"
}

/**
 * `windowMs`: [from, to] in ms since the profile started; samples outside are ignored (startup,
 * shutdown).
 */
export const summarizeProfile = (file: string, windowMs?: readonly [number, number], topN = 15): ProfileSummary => {
  const profile = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, ProfileNode>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n)
  const frameName = (n: ProfileNode | undefined) =>
    n === undefined ? "(root)" : `${n.callFrame.functionName === "" ? "(anonymous)" : n.callFrame.functionName} ${where(n.callFrame.url, n.callFrame.lineNumber)}`
  const self = new Map<string, { name: string; where: string; url: string; us: number; callers: Map<string, number> }>()
  let t = 0
  let busy = 0
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0
    const dt = profile.timeDeltas[i + 1] ?? 0
    if (windowMs && (t / 1000 < windowMs[0] || t / 1000 > windowMs[1])) continue
    const node = byId.get(profile.samples[i]!)
    if (!node) continue
    const { functionName, url, lineNumber } = node.callFrame
    if (functionName === "(idle)") continue
    busy += dt
    const name = functionName === "" ? "(anonymous)" : functionName
    const key = `${name}\u0000${url}\u0000${lineNumber}`
    const entry = self.get(key) ?? { name, where: where(url, lineNumber), url, us: 0, callers: new Map<string, number>() }
    entry.us += dt
    const caller = frameName(parent.get(node.id))
    entry.callers.set(caller, (entry.callers.get(caller) ?? 0) + dt)
    self.set(key, entry)
  }
  const entries = [...self.values()].sort((a, b) => b.us - a.us)
  const areas = new Map<string, number>()
  for (const e of entries) areas.set(areaOf(e.name, e.url), (areas.get(areaOf(e.name, e.url)) ?? 0) + e.us)
  const pct = (us: number) => (busy === 0 ? 0 : (100 * us) / busy)
  return {
    busyMs: busy / 1000,
    top: entries.slice(0, topN).map((e) => ({
      name: e.name,
      where: e.where,
      via: [...e.callers.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "",
      selfMs: e.us / 1000,
      percent: pct(e.us)
    })),
    areas: [...areas.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, selfMs: us / 1000, percent: pct(us) }))
  }
}
