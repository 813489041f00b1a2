/**
 * What the benchmarks run, built once and cached under .cache/ (gitignored):
 * - the Go programs (reference relay, Go SSH server, and the gateway peer test/go/gateway, which
 *   the tests use too), GOPATH mode against Debian's x/crypto, rebuilt when a .go source is newer
 *   than the binary;
 * - our relay compiled with the project's own build config (tsconfig.build.json) into
 *   .cache/bench-dist, so the relay subprocess runs plain JavaScript exactly as `npm run build` +
 *   `node bin/infisical.js` would (bin/infisical.js runs dist/bin.js when it exists). Running
 *   through tsx instead would put tsx's module-loader thread (a second V8 isolate) into the
 *   relay's RSS. `--relay-runner=tsx` runs `node bin/infisical.js` itself.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { buildGoProgram } from "../../test/support/goPeers.ts"

const execFileP = promisify(execFile)

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const goCacheDir = path.join(repoRoot, ".cache")

const newestMtime = async (dir: string, ext: string): Promise<number> => {
  let newest = 0
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !entry.name.endsWith(ext)) continue
    const st = await fs.stat(path.join(entry.parentPath, entry.name))
    newest = Math.max(newest, st.mtimeMs)
  }
  return newest
}

export type GoProgram = "go-relay" | "gateway" | "go-ssh-server"

const goSources: Record<GoProgram, string> = {
  "go-relay": path.join(repoRoot, "bench", "go-relay"),
  gateway: path.join(repoRoot, "test", "go", "gateway"),
  "go-ssh-server": path.join(repoRoot, "bench", "go-ssh-server")
}

/** Builds a Go program into .cache/go-bin/bench-<name> (when stale); returns the binary path. */
export const buildGo = (name: GoProgram): Promise<string> =>
  buildGoProgram(goSources[name], path.join(goCacheDir, "go-bin", `bench-${name}`))

export const goVersion = async (): Promise<string> => {
  const { stdout } = await execFileP("go", ["version"])
  return stdout.trim().replace(/^go version /, "")
}

export const benchDist = path.join(goCacheDir, "bench-dist")

/**
 * Compiles src/ into .cache/bench-dist (when stale) and returns the path of its bin.js. Type
 * errors do not stop the emit (others may be mid-edit); a missing bin.js does.
 */
export const buildRelay = async (): Promise<string> => {
  const bin = path.join(benchDist, "bin.js")
  const [srcMtime, built] = await Promise.all([
    newestMtime(path.join(repoRoot, "src"), ".ts"),
    fs.stat(bin).catch(() => undefined)
  ])
  if (built !== undefined && built.mtimeMs >= srcMtime) return bin
  await fs.rm(benchDist, { recursive: true, force: true })
  const tsc = path.join(repoRoot, "node_modules", "typescript", "bin", "tsc")
  try {
    await execFileP(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", benchDist, "--sourceMap", "false"], {
      cwd: repoRoot,
      maxBuffer: 16 << 20
    })
  } catch (err) {
    const e = err as { stdout?: string }
    const exists = await fs.stat(bin).then(() => true, () => false)
    if (!exists) throw new Error(`tsc produced no ${bin}: ${e.stdout ?? String(err)}`)
    process.stderr.write(`bench: note: tsc reported type errors (emitted anyway):\n${(e.stdout ?? "").split("\n").slice(0, 5).join("\n")}\n`)
  }
  // dist/ sits next to package.json in a real build; `"type": "module"` must apply here too.
  await fs.writeFile(path.join(benchDist, "package.json"), JSON.stringify({ type: "module" }))
  return bin
}
