/**
 * `npm run soak -- --minutes 10`: our relay (compiled `relay start` subprocess) under moderate
 * load for N minutes (bench/lib/soakRun.ts: tunnels, session churn, paced bulk sessions, gateway
 * restarts), sampling its RSS, fds and gauges. Exits 1 when memory or fds grow beyond the bounds;
 * writes its summary into docs/load.md (the soak section) unless --no-write.
 *
 *   npm run soak [-- --minutes 10] [--tunnels 50] [--churn-per-second 20] [--max-rss-slope 1]
 *                [--relay-runner dist|tsx] [--no-write]
 */
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { buildGo, buildRelay, goVersion, repoRoot } from "./lib/build.ts"
import { makeLoadMaterial } from "./lib/loadMaterial.ts"
import { fmt, LOAD_DOC, machine, markdownTable, writeSection } from "./lib/loadReport.ts"
import { installExitHooks, runToExit, stopAll } from "./lib/procs.ts"
import { runSoak, type SoakResult } from "./lib/soakRun.ts"

const { values: args } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    tunnels: { type: "string", default: "50" },
    "gateway-procs": { type: "string", default: "5" },
    "churn-per-second": { type: "string", default: "20" },
    "bulk-sessions": { type: "string", default: "3" },
    "bulk-mib-per-second": { type: "string", default: "2" },
    "reconnect-every": { type: "string", default: "60" },
    "sample-every": { type: "string", default: "5" },
    "max-rss-slope": { type: "string", default: "1" },
    "max-heap-slope": { type: "string", default: "0.5" },
    "fd-slack": { type: "string", default: "4" },
    "relay-runner": { type: "string", default: "dist" },
    "no-write": { type: "boolean", default: false }
  }
})

const t0 = performance.now()
const log = (msg: string) => {
  const s = Math.round((performance.now() - t0) / 1000)
  process.stderr.write(`[${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}] ${msg}\n`)
}

const render = (r: SoakResult, command: string, go: string): string => {
  const o = r.options
  const first = r.samples[0]
  const last = r.samples[r.samples.length - 1]
  const peak = (f: (s: SoakResult["samples"][number]) => number) => Math.max(...r.samples.map(f))
  // RSS once a minute (or every sample of a short run), to show the shape, not just the slope.
  const every = Math.max(1, Math.round(60 / o.sampleEverySeconds))
  const series = r.samples.filter((_, i) => i % every === 0).map((s) => `${(s.t / 60).toFixed(1)}′ ${fmt(s.rssKiB / 1024, 0)}`)
  return [
    `### Run of ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC: ${r.passed ? "**passed**" : "**FAILED**"}`,
    "",
    `- Machine: ${machine()}; ${go}`,
    `- Command: \`${command}\``,
    `- Load: ${o.tunnels} tunnels over ${o.gatewayProcs} gateway processes; ${o.churnPerSecond} sessions/s churn (open, 64-byte echo, close); ` +
      `${o.bulkSessions} bulk sessions read at ${fmt(o.bulkBytesPerSecond / 2 ** 20)} MiB/s each; one gateway process restarted every ${o.reconnectEverySeconds} s; ` +
      `samples every ${o.sampleEverySeconds} s`,
    `- Bounds: JS heap slope over the second half ≤ ${o.maxHeapSlopeMiBPerMinute} MiB/min (RSS slope ≤ ${o.maxRssSlopeMiBPerMinute} MiB/min ` +
      `only without a heap gauge); fds after the load ≤ before + ${o.fdSlack}; ` +
      "no session left active; no session failed except those cut by a gateway restart",
    ...r.failures.map((f) => `- **Failed:** ${f}`),
    "",
    markdownTable(["soak", "value"], [
      ["duration (min)", fmt(o.seconds / 60)],
      ["churn sessions ok / cut by a gateway restart / failed", `${r.churn.ok} / ${r.churn.cutByRestart} / ${r.churn.failed}`],
      ["churn achieved (sessions/s)", fmt(r.churn.ok / o.seconds)],
      ["bulk bytes moved (MiB)", fmt(r.bulkMiB, 0)],
      ["gateway restarts", String(r.restarts)],
      ["relay RSS first / peak / last sample (MiB)", `${fmt((first?.rssKiB ?? NaN) / 1024)} / ${fmt(peak((s) => s.rssKiB) / 1024)} / ${fmt((last?.rssKiB ?? NaN) / 1024)}`],
      ["RSS slope, second half (MiB/min)", fmt(r.rssSlopeMiBPerMinute, 2)],
      ["heap slope, second half (MiB/min)", r.heapSlopeMiBPerMinute === undefined ? "n/a (no heap gauge in /metrics)" : fmt(r.heapSlopeMiBPerMinute, 2)],
      ["relay fds before / peak / after the load", `${r.fdsBefore} / ${peak((s) => s.fds)} / ${r.fdsAfter}`],
      ["active sessions peak / after the load", `${peak((s) => s.sessionsActive)} / ${r.sessionsActiveAfter}`],
      ["RSS by minute (MiB)", series.join(", ")]
    ])
  ].join("\n")
}

const main = async (): Promise<number> => {
  installExitHooks()
  const runner = args["relay-runner"] === "tsx" ? { kind: "tsx" } as const : { kind: "dist", bin: await buildRelay() } as const
  const [gatewayBin, go] = await Promise.all([buildGo("gateway"), goVersion()])
  const m = await makeLoadMaterial()
  try {
    const result = await runSoak(m, {
      seconds: Number(args.minutes) * 60,
      tunnels: Number(args.tunnels),
      gatewayProcs: Number(args["gateway-procs"]),
      churnPerSecond: Number(args["churn-per-second"]),
      bulkSessions: Number(args["bulk-sessions"]),
      bulkBytesPerSecond: Number(args["bulk-mib-per-second"]) * 2 ** 20,
      reconnectEverySeconds: Number(args["reconnect-every"]),
      sampleEverySeconds: Number(args["sample-every"]),
      maxRssSlopeMiBPerMinute: Number(args["max-rss-slope"]),
      maxHeapSlopeMiBPerMinute: Number(args["max-heap-slope"]),
      fdSlack: Number(args["fd-slack"]),
      runner,
      gatewayBin,
      log
    })
    const command = `npm run soak${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`
    const section = render(result, command, go)
    process.stdout.write(`\n${section}\n`)
    if (args["no-write"]) log("--no-write: docs/load.md left alone")
    else {
      writeSection(LOAD_DOC, "soak", section)
      log(`wrote ${path.relative(repoRoot, LOAD_DOC)}`)
    }
    for (const f of result.failures) log(`FAILED: ${f}`)
    return result.passed ? 0 : 1
  } finally {
    await stopAll()
    await m.close()
  }
}

runToExit("soak", main)
