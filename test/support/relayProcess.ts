/**
 * Run `infisical relay ...` as a subprocess (the way users and systemd do) and watch its stderr.
 * Waits resolve on an observed line and reject on exit or a generous timeout: never a sleep.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"

const repoRoot = path.resolve(import.meta.dirname, "../..")
/** The sources, through tsx: tests never run a possibly stale dist/. */
const sourceEntry = ["--import", "tsx", path.join(repoRoot, "src", "bin.ts")]

export interface RelayProcess {
  readonly child: ChildProcess
  readonly output: () => string
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  readonly kill: (signal?: NodeJS.Signals) => void
}

export interface SpawnOptions {
  /** The node arguments before the CLI's (default: the sources through tsx). */
  readonly entry?: ReadonlyArray<string>
  /** Pass the test's PATH (default true); upstream's e2e suite runs the relay without one. */
  readonly inheritPath?: boolean
}

export const spawnRelay = (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  options: SpawnOptions = {}
): RelayProcess => {
  const child = spawn(process.execPath, [...(options.entry ?? sourceEntry), ...args], {
    cwd: repoRoot,
    env: options.inheritPath === false ? env : { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let text = ""
  const listeners = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    text += chunk.toString("utf8")
    for (const l of listeners) l()
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      for (const l of listeners) l()
      resolve({ code, signal })
    })
  )
  const waitFor = (pattern: RegExp, timeoutMs = 30_000) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const m = text.match(pattern)
        if (m) {
          cleanup()
          resolve(m)
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup()
          reject(new Error(`relay exited before ${pattern}; output:\n${text}`))
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out waiting for ${pattern}; output:\n${text}`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        listeners.delete(check)
      }
      listeners.add(check)
      check()
    })
  return {
    child,
    output: () => text,
    waitFor,
    exited,
    kill: (signal = "SIGKILL") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    }
  }
}
