/**
 * The admission-limit flags of `relay start`: defaults, env fallbacks, flag > env, the limits file
 * over both, and a clear `error: ...` for every bad value or bad file; `--help` names each flag
 * with its env variable.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Either, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cli, formatStartupError } from "../../src/Cli.ts"
import { resolveStartConfig, StartupError } from "../../src/cli/resolveStartConfig.ts"
import { defaultRelayLimits, envNameOf, limitSpecs } from "../../src/relay/Limits.ts"
import { startFlags } from "../support/relayHarness.ts"
import { spawnRelay } from "../support/relayProcess.ts"

const home = fs.mkdtempSync(path.join(os.tmpdir(), "relay-limits-cli-"))
const env = (vars: Record<string, string>) =>
  ConfigProvider.fromMap(new Map(Object.entries({ HOME: home, INFISICAL_RELAY_STATE_DIR: path.join(home, "state"), INFISICAL_TOKEN: "t", ...vars })))

const resolve = (flags: Parameters<typeof startFlags>[0], vars: Record<string, string> = {}) =>
  resolveStartConfig(startFlags({ name: "r", host: "h", ...flags })).pipe(
    Effect.withConfigProvider(env(vars)),
    Effect.provide(NodeContext.layer)
  )

/** `relay start <args>` in-process, up to its StartupError, printed as the CLI prints it. */
const startError = (args: ReadonlyArray<string>, vars: Record<string, string> = {}) =>
  cli(["node", "infisical", "relay", "start", "--name=r", "--host=h", ...args]).pipe(
    Effect.withConfigProvider(env(vars)),
    Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)),
    Effect.flip,
    Effect.map((e) => {
      if (!(e instanceof StartupError)) throw new Error(`expected a StartupError, got ${String(e)}`)
      return formatStartupError(e)
    })
  )

const writeFile = (name: string, text: string) => {
  const file = path.join(home, name)
  fs.writeFileSync(file, text)
  return file
}

describe("limit flags", () => {
  it.effect("defaults; env fallbacks; a flag beats its env variable", () =>
    Effect.gen(function* () {
      const d = yield* resolve({})
      expect(d.limits?.initial).toEqual(defaultRelayLimits)
      expect(d.limits?.file).toBeUndefined()
      const c = yield* resolve(
        { maxTunnels: "7", sessionIdleTimeout: "90s" },
        { INFISICAL_RELAY_MAX_TUNNELS: "9", INFISICAL_RELAY_SSH_ACCEPT_RATE: "2.5", INFISICAL_RELAY_FAIR_SHARE: "false", INFISICAL_RELAY_MAX_SESSIONS: "0" }
      )
      expect(c.limits?.initial).toMatchObject({ maxTunnels: 7, sshAcceptRate: 2.5, fairShare: false, maxSessions: 0 })
      expect(Duration.toMillis(c.limits!.initial.sessionIdleTimeout)).toBe(90_000)
    }))

  it.effect("bad values are refused at start with the flag's name and what it expects", () =>
    Effect.gen(function* () {
      expect(yield* startError(["--max-tunnels=many"])).toBe('error: invalid --max-tunnels "many": expected a whole number (0 = no limit)\n')
      expect(yield* startError(["--max-sessions=-1"])).toBe('error: invalid --max-sessions "-1": expected a whole number (0 = no limit)\n')
      expect(yield* startError(["--ssh-handshake-timeout=0"])).toBe(
        'error: invalid --ssh-handshake-timeout "0": expected a duration such as 500ms, 5s or 1m\n'
      )
      expect(yield* startError(["--tls-accept-rate=fast"])).toBe(
        'error: invalid --tls-accept-rate "fast": expected a number of connections per second (0 = off)\n'
      )
      expect(yield* startError([], { INFISICAL_RELAY_DISCONNECT_EXPIRED_TUNNELS: "yes" })).toBe(
        'error: invalid --disconnect-expired-tunnels "yes": expected true or false\n'
      )
      expect(yield* startError(["--session-idle-timeout=5 minutes"])).toBe(
        'error: invalid --session-idle-timeout "5 minutes": expected a duration such as 30s or 5m (0 = off)\n'
      )
    }))

  it.effect("the limits file overrides flags and env; a bad file refuses to start and says why", () =>
    Effect.gen(function* () {
      const good = writeFile("good.json", JSON.stringify({ "max-tunnels": 500, "session-idle-timeout": "5m", "fair-share": false }))
      const c = yield* resolve({ maxTunnels: "7", limitsFile: good }, { INFISICAL_RELAY_MAX_SESSIONS: "11" })
      expect(c.limits?.file).toBe(good)
      expect(c.limits?.base.maxTunnels).toBe(7) // what a reload starts from
      expect(c.limits?.initial).toMatchObject({ maxTunnels: 500, maxSessions: 11, fairShare: false })
      expect(Duration.toMillis(c.limits!.initial.sessionIdleTimeout)).toBe(300_000)
      const viaEnv = yield* resolve({}, { INFISICAL_RELAY_LIMITS_FILE: good })
      expect(viaEnv.limits?.initial.maxTunnels).toBe(500)

      const cases: ReadonlyArray<readonly [string, RegExp]> = [
        [path.join(home, "missing.json"), /^error: invalid limits file .*missing\.json: .*(ENOENT|no such file)/],
        [writeFile("garbage.json", "{ max-tunnels: 5"), /^error: invalid limits file .*garbage\.json: not JSON: /],
        [writeFile("array.json", "[1]"), /^error: invalid limits file .*array\.json: expected a JSON object keyed by flag names\n$/],
        [writeFile("typo.json", JSON.stringify({ "max-tunels": 5 })), /^error: invalid limits file .*typo\.json: max-tunels: unknown limit\n$/],
        [writeFile("type.json", JSON.stringify({ "max-tunnels": "5" })), /^error: invalid limits file .*type\.json: max-tunnels: expected a whole number \(0 = no limit\)\n$/],
        [writeFile("dur.json", JSON.stringify({ "tls-handshake-timeout": "0" })), /tls-handshake-timeout: expected a duration such as 500ms, 5s or 1m\n$/],
        [writeFile("frac.json", JSON.stringify({ "max-sessions": 1.5 })), /frac\.json: max-sessions: expected a whole number \(0 = no limit\)\n$/]
      ]
      for (const [file, expected] of cases) {
        expect(yield* startError([`--limits-file=${file}`])).toMatch(expected)
      }
      const bad = yield* Effect.either(resolve({ limitsFile: path.join(home, "missing.json") }))
      expect(Either.isLeft(bad)).toBe(true)
    }))
})

describe("relay start --help", () => {
  it("lists every limit flag and --limits-file with its env variable and default", async () => {
    const p = spawnRelay(["relay", "start", "--help"], { HOME: "/tmp" })
    expect((await p.exited).code).toBe(0)
    const help = p.output().replace(/\s+/g, " ")
    expect(help).toContain("--limits-file")
    expect(help).toContain("INFISICAL_RELAY_LIMITS_FILE")
    for (const spec of limitSpecs) {
      expect(help).toContain(`--${spec.flag}`)
      expect(help).toContain(envNameOf(spec))
    }
    expect(help).toContain("INFISICAL_RELAY_FAIR_SHARE, default true")
    expect(help).toContain("INFISICAL_RELAY_MAX_SESSIONS_PER_GATEWAY, default 2000")
  })
})
