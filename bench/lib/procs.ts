/**
 * Child processes for the benchmarks: spawn with stdout/stderr line capture, wait for lines
 * (never sleep-and-hope), read a process's CPU time and RSS from /proc, and make sure every child
 * dies with the run (normal end, failure, Ctrl-C).
 *
 * Plain Node promises: this is scaffolding around external processes, not relay code.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as readline from "node:readline"

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** How many recent lines a process keeps (older ones are only seen by waiters already waiting). */
const KEEP_LINES = 2000

export class Proc {
  readonly child: ChildProcess
  readonly pid: number
  readonly exited: Promise<Exit>
  private exit: Exit | undefined
  private readonly recent: Array<string> = []
  private readonly waiters = new Set<(line: string | undefined) => void>()
  private lineCount = 0

  constructor(
    readonly label: string,
    command: string,
    args: ReadonlyArray<string>,
    options: { readonly env?: NodeJS.ProcessEnv; readonly cwd?: string; readonly stdin?: boolean } = {}
  ) {
    this.child = spawn(command, [...args], {
      stdio: [options.stdin === true ? "pipe" : "ignore", "pipe", "pipe"],
      env: options.env ?? process.env,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd })
    })
    if (this.child.pid === undefined) throw new Error(`${label}: spawn of ${command} failed`)
    this.pid = this.child.pid
    all.add(this)
    const onLine = (stream: string) => (line: string) => {
      this.lineCount++
      this.recent.push(`${stream}${line}`)
      if (this.recent.length > KEEP_LINES) this.recent.splice(0, this.recent.length - KEEP_LINES)
      for (const w of [...this.waiters]) w(line)
    }
    readline.createInterface({ input: this.child.stdout! }).on("line", onLine(""))
    readline.createInterface({ input: this.child.stderr! }).on("line", onLine("! "))
    this.exited = new Promise((resolve) => {
      this.child.on("error", (err) => onLine("! ")(`spawn error: ${err.message}`))
      this.child.on("close", (code, signal) => {
        this.exit = { code, signal }
        all.delete(this)
        for (const w of [...this.waiters]) w(undefined)
        resolve(this.exit)
      })
    })
  }

  get alive(): boolean {
    return this.exit === undefined
  }

  /** The last lines of output (stderr lines prefixed with "! "). */
  tail(n = 30): string {
    return `--- ${this.label} (pid ${this.pid}${this.exit ? `, exited ${this.exit.code ?? this.exit.signal}` : ""}) ---\n` +
      this.recent.slice(-n).join("\n")
  }

  /** Resolves with the match once `count` lines (seen so far and from now on) matched `re`. */
  waitFor(re: RegExp, { timeoutMs = 30_000, count = 1 }: { timeoutMs?: number; count?: number } = {}): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      let seen = 0
      let last: RegExpExecArray | undefined
      const check = (line: string): boolean => {
        const m = re.exec(line.startsWith("! ") ? line.slice(2) : line)
        if (m) {
          seen++
          last = m
        }
        return seen >= count
      }
      for (const line of this.recent) {
        if (check(line)) return resolve(last!)
      }
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${count} x ${re} (saw ${seen})\n${this.tail()}`))
      }, timeoutMs)
      const waiter = (line: string | undefined) => {
        if (line === undefined) {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          reject(new Error(`exited while waiting for ${re}\n${this.tail()}`))
        } else if (check(line)) {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          resolve(last!)
        }
      }
      this.waiters.add(waiter)
      if (!this.alive) waiter(undefined)
    })
  }

  /** Resolves with the next line matching `re` that arrives after this call. */
  next(re: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re}\n${this.tail()}`))
      }, timeoutMs)
      const waiter = (line: string | undefined) => {
        if (line === undefined) {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          reject(new Error(`exited while waiting for ${re}\n${this.tail()}`))
          return
        }
        const m = re.exec(line)
        if (m) {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          resolve(m)
        }
      }
      this.waiters.add(waiter)
      if (!this.alive) waiter(undefined)
    })
  }

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`)
  }

  /** SIGTERM (or `signal`), SIGKILL after `graceMs`; resolves once exited. */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 5_000): Promise<Exit> {
    if (this.exit) return this.exit
    this.child.kill(signal)
    const guard = setTimeout(() => this.child.kill("SIGKILL"), graceMs)
    try {
      return await this.exited
    } finally {
      clearTimeout(guard)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// every child dies with the run

const all = new Set<Proc>()

export const stopAll = async (): Promise<void> => {
  await Promise.all([...all].map((p) => p.stop("SIGTERM", 3_000)))
}

/** Run a bench program's main: exit with its code, or report the error, stop every child and exit 1. */
export const runToExit = (label: string, main: () => Promise<number>): void => {
  main().then(
    (code) => process.exit(code),
    async (err: unknown) => {
      process.stderr.write(`${label} failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
      await stopAll()
      process.exit(1)
    }
  )
}

let hooked = false
/** Kill children on exit and on SIGINT/SIGTERM of the harness. */
export const installExitHooks = (): void => {
  if (hooked) return
  hooked = true
  process.on("exit", () => {
    for (const p of all) {
      try {
        process.kill(p.pid, "SIGKILL")
      } catch {
        // already gone
      }
    }
  })
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping children\n`)
      void stopAll().finally(() => process.exit(130))
    })
  }
}

// ---------------------------------------------------------------------------------------------
// /proc

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  } catch {
    return 100
  }
})()

/** User + system CPU seconds of a process so far (all its threads). */
export const cpuSeconds = (pid: number): number => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the command name (which may contain spaces) start at field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return (utime + stime) / clockTicks
}

/** Resident set size in KiB. */
export const rssKiB = (pid: number): number => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status)
  if (!m) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(m[1])
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Median RSS of `samples` readings `gapMs` apart (RSS of a GC'd runtime wobbles a little). */
export const settledRssKiB = async (pid: number, samples = 5, gapMs = 200): Promise<number> => {
  const values: Array<number> = []
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(gapMs)
    values.push(rssKiB(pid))
  }
  values.sort((a, b) => a - b)
  return values[Math.floor(values.length / 2)]!
}
