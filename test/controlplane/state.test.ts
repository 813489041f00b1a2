/**
 * Checklist 59: the per-relay state file (protocol.md §1.3): location by euid, `KEY=value` lines,
 * first `KEY=` wins on read, a write drops blank lines and older lines of the key and appends,
 * directory 0700 and file 0600.
 */
import { NodeContext } from "@effect/platform-node"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { parseStateText, readRelayState, relayStatePath, setStateValue, writeRelayState } from "../../src/state/RelayStateFile.ts"

describe("relay state file", () => {
  it("lives in /etc/infisical/relays for root and ~/.infisical/relays otherwise", () => {
    expect(relayStatePath("r1", { euid: 0, home: "/root", stateDir: undefined })).toBe("/etc/infisical/relays/r1.conf")
    expect(relayStatePath("r1", { euid: 1000, home: "/home/u", stateDir: undefined })).toBe("/home/u/.infisical/relays/r1.conf")
    expect(relayStatePath("r1", { euid: 1000, home: "/home/u", stateDir: "/srv/state" })).toBe("/srv/state/r1.conf")
  })

  it("reads the first KEY= line (trimmed) and rewrites a key at the end", () => {
    const text = "  A=1  \n\nB=2\nA=3\n"
    expect([...parseStateText(text)]).toEqual([["A", "1"], ["B", "2"]])
    expect(setStateValue(text, "A", "9")).toBe("B=2\nA=9\n")
    expect(setStateValue("", "C", "x=y")).toBe("C=x=y\n")
    expect(parseStateText("C=x=y\n").get("C")).toBe("x=y")
  })

  it("writes with mode 0600 in a 0700 directory and reads it back", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-state-"))
    const file = path.join(dir, "relays", "r2.conf")
    const read = await Effect.runPromise(
      Effect.gen(function* () {
        yield* writeRelayState(file, [["INFISICAL_RELAY_ACCESS_TOKEN", "t1"], ["INFISICAL_RELAY_DOMAIN", "https://x/api"]])
        yield* writeRelayState(file, [["INFISICAL_RELAY_ACCESS_TOKEN", "t2"]])
        return yield* readRelayState(file)
      }).pipe(Effect.provide(NodeContext.layer))
    )
    expect(fs.readFileSync(file, "utf8")).toBe("INFISICAL_RELAY_DOMAIN=https://x/api\nINFISICAL_RELAY_ACCESS_TOKEN=t2\n")
    expect(read.get("INFISICAL_RELAY_ACCESS_TOKEN")).toBe("t2")
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700)
  })
})
