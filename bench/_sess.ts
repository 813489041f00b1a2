// scratch A/B: relay CPU per new session (user/sys), our builds vs Go. Deleted before commit.
import * as fs from "node:fs"
import { buildGo } from "./lib/build.ts"
import { makeMaterial } from "./lib/material.ts"
import { sessionRate, serialPings } from "./lib/measure.ts"
import { installExitHooks, runToExit } from "./lib/procs.ts"
import { startGateway, startGoRelay, startOurRelay } from "./lib/subjects.ts"
const ticks = 100
const split = (pid: number) => { const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8"); const x = f.slice(f.lastIndexOf(")") + 2).split(" "); return [Number(x[11]) / ticks, Number(x[12]) / ticks] }
runToExit("sess", async () => {
  installExitHooks()
  const bins = process.argv.slice(2)
  const [goRelay, gateway] = await Promise.all([buildGo("go-relay"), buildGo("gateway")])
  const m = await makeMaterial()
  const settings = { reps: 3, seconds: 1, rateSeconds: 3, concurrency: 64, serialPings: 150, parallelSessions: 8, idleTunnels: 0, idleSessions: 0 }
  for (let round = 0; round < 2; round++) {
    for (const who of ["go", ...bins]) {
      const relay = who === "go" ? await startGoRelay(m, goRelay) : await startOurRelay(m, { runner: { kind: "dist", bin: who } })
      const gw = await startGateway(m, gateway, { label: "gw", sshAddr: `127.0.0.1:${relay.sshPort}`, connections: 1 })
      await relay.waitTunnels(1)
      const target = { kind: "relay" as const, port: relay.tlsPort, gatewayId: gw.ids[0]!, contexts: await m.clientFor(gw.ids[0]!) }
      const pid = relay.proc.pid!
      const perf = who !== "go" && process.env["PERF"] ? (await import("node:child_process")).spawn("perf", ["record", "-F", "499", "-g", "-p", String(pid), "-o", `/tmp/perf-${round}.data`], { stdio: "ignore" }) : undefined
      const [u0, s0] = split(pid)
      const r = await sessionRate(target, pid, settings)
      const [u1, s1] = split(pid)
      if (perf) { perf.kill("SIGINT"); await new Promise((r) => perf.once("exit", r)) }
      const n = r.perSecond * settings.rateSeconds * settings.reps
      const ser = await serialPings(target, settings)
      console.log(`${who.padEnd(30)} ${r.perSecond.toFixed(0)}/s cpu ${r.cpuMsPerSession!.toFixed(2)} ms/session (user ${(1000 * (u1 - u0) / n).toFixed(2)} sys ${(1000 * (s1 - s0) / n).toFixed(2)}) serial p50 ${ser.p50.toFixed(2)} p99 ${ser.p99.toFixed(2)}`)
      await gw.proc.stop(); await relay.proc.stop()
    }
  }
  await m.close()
  return 0
})
