/**
 * What `relay start` loads before it runs: the static import graph from src/bin.ts and
 * src/main.ts. Each heavy dependency below is needed only in some configurations and is loaded
 * with `import()` when one asks for it (docs/benchmarks.md, "Memory"); a static import anywhere in
 * the graph would put it back into every relay's resident memory. The package indexes of
 * @effect/platform and @effect/platform-node evaluate every module they hold (@effect/platform's
 * carries the Swagger and Scalar UIs as source strings), so only their per-module entry points
 * may be imported.
 *
 * Read with TypeScript's parser, as the compiler emits: `import type` is erased, while
 * `import { type A } from "x"` stays a (side-effect) import under verbatimModuleSyntax.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import ts from "typescript"
import { expect, it } from "vitest"

const srcDir = path.resolve(import.meta.dirname, "../../src")

/** Module specifiers a file imports statically, in the emitted JavaScript. */
const staticImports = (file: string): ReadonlyArray<string> => {
  const source = ts.createSourceFile(file, fs.readFileSync(file, "utf8"), ts.ScriptTarget.ES2022, false)
  const found: Array<string> = []
  for (const statement of source.statements) {
    if (ts.isImportDeclaration(statement) && statement.importClause?.isTypeOnly !== true) {
      found.push((statement.moduleSpecifier as ts.StringLiteral).text)
    } else if (ts.isExportDeclaration(statement) && !statement.isTypeOnly && statement.moduleSpecifier !== undefined) {
      found.push((statement.moduleSpecifier as ts.StringLiteral).text)
    }
  }
  return found
}

/** Every package specifier reachable from `entries`, with the chain of files that leads to it. */
const reachable = (entries: ReadonlyArray<string>) => {
  const packages = new Map<string, ReadonlyArray<string>>()
  const files = new Map<string, ReadonlyArray<string>>(entries.map((entry) => [entry, [entry]]))
  const queue = [...entries]
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    const chain = files.get(file)!
    for (const specifier of staticImports(file)) {
      if (specifier.startsWith(".")) {
        const target = path.resolve(path.dirname(file), specifier)
        if (!files.has(target)) {
          files.set(target, [...chain, target])
          queue.push(target)
        }
      } else if (!packages.has(specifier)) {
        packages.set(specifier, chain)
      }
    }
  }
  return { packages, files: [...files.keys()] }
}

const relative = (chain: ReadonlyArray<string>) => chain.map((f) => path.relative(srcDir, f)).join(" -> ")

it("relay start loads no tracing SDK, Prometheus exporter, AWS SDK, X.509 minting, dev control plane or package index", () => {
  // bin.ts sets a heap flag, then imports main.ts dynamically: both are start-up.
  const { files, packages } = reachable([path.join(srcDir, "bin.ts"), path.join(srcDir, "main.ts")])
  const heavy = /^(@opentelemetry\/|@effect\/opentelemetry|@smithy\/|@aws-sdk\/|@aws-crypto\/|@peculiar\/|reflect-metadata$)/
  const indexes = new Set(["@effect/platform", "@effect/platform-node"])
  const offending = [...packages]
    .filter(([specifier]) => heavy.test(specifier) || indexes.has(specifier))
    .map(([specifier, chain]) => `${specifier} via ${relative(chain)}`)
  const devModules = files.filter((f) => f.startsWith(path.join(srcDir, "dev") + path.sep)).map((f) => path.relative(srcDir, f))
  expect(offending).toEqual([])
  expect(devModules).toEqual([])
  // The walk itself works: it reaches the relay's listeners and the packages they do use.
  expect(files).toContain(path.join(srcDir, "relay", "TlsListener.ts"))
  expect([...packages.keys()]).toContain("@effect/platform/HttpClient")
})
