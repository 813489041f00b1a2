/**
 * Writing the load test's and the soak's results into docs/load.md: each owns one section between
 * `<!-- <name>:begin -->` and `<!-- <name>:end -->` markers, replaced whole on every run, so the
 * hand-written text around them stays.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { repoRoot } from "./build.ts"

export const LOAD_DOC = path.join(repoRoot, "docs", "load.md")

/** One line describing the machine: CPU model and count, memory, kernel, Node. */
export const machine = (): string => {
  const cpus = os.cpus()
  return `${cpus.length} × ${cpus[0]?.model.trim() ?? "unknown CPU"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ` +
    `Linux ${os.release()}, Node ${process.version}`
}

/** Replaces the `name` section of `file` (the markers must exist). */
export const writeSection = (file: string, name: string, markdown: string): void => {
  const begin = `<!-- ${name}:begin -->`
  const end = `<!-- ${name}:end -->`
  const doc = fs.readFileSync(file, "utf8")
  const a = doc.indexOf(begin)
  const b = doc.indexOf(end)
  if (a < 0 || b < a) throw new Error(`${file}: no ${begin} ... ${end} markers`)
  fs.writeFileSync(file, `${doc.slice(0, a + begin.length)}\n${markdown.trim()}\n${doc.slice(b)}`)
}

/** A markdown table from a header row and body rows. */
export const markdownTable = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string =>
  [header, header.map(() => "---"), ...body].map((row) => `| ${row.join(" | ")} |`).join("\n")

export const fmt = (x: number | undefined, digits = 1): string => (x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(digits))
