/**
 * Entry point. Caps V8's young generation first, then loads and runs the CLI (src/main.ts).
 *
 * V8 grows each semi-space of the young generation from 1 MiB up to 16 MiB when many objects
 * survive scavenges, which is what loading ~800 modules does; the grown, empty space then stays
 * resident (~25 MiB of an idle relay's RSS). At run time the relay's garbage dies young (buffers,
 * fibers): 1 MiB semi-spaces mean more, cheap scavenges and fewer full GCs, at a CPU cost within
 * the noise of our shared benchmark machine (docs/benchmarks.md, "Memory"). The flag
 * must be set before the CLI's module graph is loaded (ESM links every static import before
 * running any), hence the dynamic import. `--semi-space-growth-factor` is one of the few heap
 * flags V8 still reads after start-up; `--max-semi-space-size` is not. An operator's own sizing
 * (NODE_OPTIONS or node flags) is left alone.
 */
import { setFlagsFromString } from "node:v8"

const nodeFlags = [...process.execArgv, process.env["NODE_OPTIONS"] ?? ""].join(" ")
if (!/--(max-|min-)?semi[-_]space[-_](size|growth[-_]factor)/.test(nodeFlags)) {
  setFlagsFromString("--semi-space-growth-factor=1")
}
await import("./main.ts")
