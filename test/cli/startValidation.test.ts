/**
 * `relay start` validation, in-process through the real command tree: every message of
 * protocol.md §1.1 steps 1-9, flag > env precedence, domain resolution.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cli, formatStartupError } from "../../src/Cli.ts"
import { resolveStartConfig, StartupError, withApiSuffix } from "../../src/cli/resolveStartConfig.ts"
import type { StartFlags } from "../../src/cli/StartOptions.ts"
import { parseCustomHeaders } from "../../src/cli/customHeaders.ts"
import type { RelayConfigShape } from "../../src/RelayConfig.ts"
import { startFlags } from "../support/relayHarness.ts"

const tempHome = () => fs.mkdtempSync(path.join(os.tmpdir(), "relay-cli-"))

/** Env for a test: an isolated HOME and state dir unless overridden. */
const envOf = (vars: Record<string, string>, home = tempHome()) =>
  ConfigProvider.fromMap(new Map(Object.entries({ HOME: home, INFISICAL_RELAY_STATE_DIR: path.join(home, "state"), ...vars })))

/** Run `infisical relay start <args>` in-process and return its StartupError. */
const startError = (args: ReadonlyArray<string>, vars: Record<string, string> = {}) =>
  cli(["node", "infisical", "relay", "start", ...args]).pipe(
    Effect.withConfigProvider(envOf(vars)),
    Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)),
    Effect.flip,
    Effect.map((e) => {
      if (!(e instanceof StartupError)) throw new Error(`expected a StartupError, got ${String(e)}`)
      return e
    })
  )

const noFlags: StartFlags = startFlags({})
const flags = (f: Partial<Record<keyof StartFlags, string>>): StartFlags => {
  const out: Record<string, unknown> = { ...noFlags }
  for (const [k, v] of Object.entries(f)) {
    out[k] = Option.some(k === "token" || k === "clientSecret" || k === "jwt" ? Redacted.make(v) : v)
  }
  return out as unknown as StartFlags
}
const resolve = (f: StartFlags, vars: Record<string, string> = {}, home?: string) =>
  resolveStartConfig(f).pipe(Effect.withConfigProvider(envOf(vars, home)), Effect.provide(NodeContext.layer))

describe("relay start validation (protocol.md §1.1)", () => {
  it.effect("1. no name: names INFISICAL_RELAY_NAME", () =>
    Effect.gen(function* () {
      const e = yield* startError([])
      expect(formatStartupError(e)).toBe("error: please provide name flag\nunable to get name flag or INFISICAL_RELAY_NAME env\n")
    }))

  it.effect("1. a whitespace-only env name counts as missing", () =>
    Effect.gen(function* () {
      const e = yield* startError([], { INFISICAL_RELAY_NAME: "   " })
      expect(e.error).toBe("please provide name flag")
    }))

  it.effect("2. invalid enroll method, checked before the host", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r", "--enroll-method", "foo"])
      expect(e.error).toBe('invalid --enroll-method "foo": supported values are "token" and "aws"')
      const fromEnv = yield* startError(["--name", "r"], { INFISICAL_RELAY_ENROLL_METHOD: "bar" })
      expect(fromEnv.error).toBe('invalid --enroll-method "bar": supported values are "token" and "aws"')
    }))

  it.effect("3. no host without enroll method: names INFISICAL_RELAY_HOST", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r"])
      expect(e.error).toBe("please provide host flag")
      expect(e.messages).toEqual(["unable to get host flag or INFISICAL_RELAY_HOST env"])
    }))

  it.effect("6. aws without relay id", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r", "--enroll-method", "aws"])
      expect(e.error).toBe("--relay-id is required when --enroll-method=aws")
    }))

  it.effect("6. aws relay id from flag, env, then stored state", () =>
    Effect.gen(function* () {
      const home = tempHome()
      fs.mkdirSync(path.join(home, "state"), { recursive: true })
      fs.writeFileSync(path.join(home, "state", "r.conf"), "INFISICAL_RELAY_ID=stored-id\n")
      const stored = yield* resolve(flags({ name: "r", enrollMethod: "aws" }), {}, home)
      expect(stored.mode).toMatchObject({ _tag: "EnrolledAws", relayId: "stored-id" })
      const env = yield* resolve(flags({ name: "r", enrollMethod: "aws" }), { INFISICAL_RELAY_ID: "env-id" }, home)
      expect(env.mode).toMatchObject({ relayId: "env-id" })
      const flag = yield* resolve(flags({ name: "r", enrollMethod: "aws", relayId: "flag-id" }), { INFISICAL_RELAY_ID: "env-id" }, home)
      expect(flag.mode).toMatchObject({ relayId: "flag-id" })
    }))

  it.effect("7. token enrollment without token or stored access token", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r", "--enroll-method", "token"])
      expect(e.error).toBe("--token is required when --enroll-method=token (no stored access token found)")
    }))

  it.effect("7. same enrollment token reuses the stored access token; a new one enrolls", () =>
    Effect.gen(function* () {
      const home = tempHome()
      fs.mkdirSync(path.join(home, "state"), { recursive: true })
      fs.writeFileSync(
        path.join(home, "state", "r.conf"),
        "INFISICAL_RELAY_ACCESS_TOKEN=jwt-1\nINFISICAL_RELAY_ENROLLMENT_TOKEN=tok-1\n"
      )
      const same = yield* resolve(flags({ name: "r", enrollMethod: "token", token: "tok-1" }), {}, home)
      expect(same.mode._tag).toBe("EnrolledToken")
      if (same.mode._tag !== "EnrolledToken" || same.mode.credential._tag !== "Stored") throw new Error("expected stored")
      expect(Redacted.value(same.mode.credential.accessToken)).toBe("jwt-1")
      expect(same.mode.credential.enrollmentTokenMatched).toBe(true)
      const other = yield* resolve(flags({ name: "r", enrollMethod: "token", token: "tok-2" }), {}, home)
      if (other.mode._tag !== "EnrolledToken") throw new Error("expected token mode")
      expect(other.mode.credential._tag).toBe("Enroll")
      const envToken = yield* resolve(flags({ name: "r", enrollMethod: "token" }), { INFISICAL_RELAY_ACCESS_TOKEN: "jwt-env" }, home)
      if (envToken.mode._tag !== "EnrolledToken" || envToken.mode.credential._tag !== "Stored") throw new Error("expected stored")
      expect(Redacted.value(envToken.mode.credential.accessToken)).toBe("jwt-env")
    }))

  it.effect("8. instance relay without INFISICAL_RELAY_AUTH_SECRET", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r", "--host", "10.0.0.1", "--type", "instance"])
      expect(formatStartupError(e)).toBe("error: INFISICAL_RELAY_AUTH_SECRET is not set\nunable to get relay auth secret\n")
    }))

  it.effect("9. org relay without token or auth method", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r", "--host", "h"])
      expect(e.error).toBe("please provide auth-method flag")
    }))

  it.effect("9. invalid auth method", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r", "--host", "h", "--auth-method", "ldap-auth"])
      expect(e.error).toBe("Invalid login method: ldap-auth")
    }))

  it.effect("9. auth method credentials are required", () =>
    Effect.gen(function* () {
      const e = yield* startError(["--name", "r", "--host", "h", "--auth-method", "universal-auth"])
      expect(e.error).toBe("please provide client-id flag")
      const k = yield* startError(["--name", "r", "--host", "h", "--auth-method", "kubernetes", "--machine-identity-id", "id"])
      expect(k.error).toBe("please provide service-account-token-path flag")
    }))

  it.effect("9. org token chain: flag > INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN > INFISICAL_TOKEN > TOKEN", () =>
    Effect.gen(function* () {
      const tokenOf = (c: RelayConfigShape) => (c.mode._tag === "OrgToken" ? Redacted.value(c.mode.accessToken) : "?")
      const all = { INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN: "ua", INFISICAL_TOKEN: "it", TOKEN: "t" }
      expect(tokenOf(yield* resolve(flags({ name: "r", host: "h", token: "flag" }), all))).toBe("flag")
      expect(tokenOf(yield* resolve(flags({ name: "r", host: "h" }), all))).toBe("ua")
      expect(tokenOf(yield* resolve(flags({ name: "r", host: "h" }), { INFISICAL_TOKEN: "it", TOKEN: "t" }))).toBe("it")
      expect(tokenOf(yield* resolve(flags({ name: "r", host: "h" }), { TOKEN: "t" }))).toBe("t")
    }))

  it.effect("flag beats env for name, host and type", () =>
    Effect.gen(function* () {
      const env = { INFISICAL_RELAY_NAME: "env-name", INFISICAL_RELAY_HOST: "env-host", INFISICAL_RELAY_TYPE: "org", INFISICAL_RELAY_AUTH_SECRET: "s" }
      const c = yield* resolve(flags({ name: "flag-name", host: "flag-host", type: "instance" }), env)
      expect(c.name).toBe("flag-name")
      expect(c.mode).toMatchObject({ _tag: "Instance", host: "flag-host" })
      const e = yield* resolve(flags({}), { ...env, INFISICAL_TOKEN: "t" })
      expect(e.name).toBe("env-name")
      expect(e.mode).toMatchObject({ _tag: "OrgToken", host: "env-host" })
    }))

  it.effect("the instance secret and tokens stay Redacted", () =>
    Effect.gen(function* () {
      const c = yield* resolve(flags({ name: "r", host: "h", type: "instance" }), { INFISICAL_RELAY_AUTH_SECRET: "TOPSECRET" })
      expect(JSON.stringify(c)).not.toContain("TOPSECRET")
      expect(String(c.mode)).not.toContain("TOPSECRET")
    }))

  it.effect("our ports: defaults, env, flags, and a clear error for a bad value", () =>
    Effect.gen(function* () {
      const base = { INFISICAL_TOKEN: "t" }
      const d = yield* resolve(flags({ name: "r", host: "h" }), base)
      expect([d.sshPort, d.tlsPort, d.listenHost, Option.isNone(d.statusAddress)]).toEqual([2222, 8443, undefined, true])
      const e = yield* resolve(flags({ name: "r", host: "h", tlsPort: "9443" }), { ...base, INFISICAL_RELAY_SSH_PORT: "2200", INFISICAL_RELAY_TLS_PORT: "1", INFISICAL_RELAY_STATUS_ADDR: ":9090" })
      expect([e.sshPort, e.tlsPort]).toEqual([2200, 9443])
      expect(e.statusAddress).toEqual(Option.some({ host: "127.0.0.1", port: 9090 }))
      const bad = yield* Effect.either(resolve(flags({ name: "r", host: "h", sshPort: "99999" }), base))
      expect(Either.isLeft(bad) && bad.left.error).toBe('invalid --ssh-port "99999": expected a port number between 0 and 65535')
    }))
})

describe("domain resolution", () => {
  const apiUrl = (f: StartFlags, vars: Record<string, string>, home?: string) =>
    resolve(f, { INFISICAL_TOKEN: "t", ...vars }, home).pipe(Effect.map((c) => c.apiUrl))
  const base = { name: "r", host: "h" }

  it("appends /api exactly once", () => {
    expect(withApiSuffix("https://x.example")).toBe("https://x.example/api")
    expect(withApiSuffix("https://x.example/")).toBe("https://x.example/api")
    expect(withApiSuffix("https://x.example/api")).toBe("https://x.example/api")
    expect(withApiSuffix("https://x.example/api/")).toBe("https://x.example/api")
  })

  it.effect("default is app.infisical.com", () =>
    Effect.gen(function* () {
      expect(yield* apiUrl(flags(base), {})).toBe("https://app.infisical.com/api")
    }))

  it.effect("--domain > stored > logged-in user > INFISICAL_DOMAIN > INFISICAL_API_URL", () =>
    Effect.gen(function* () {
      const home = tempHome()
      const env = { INFISICAL_DOMAIN: "https://env-domain", INFISICAL_API_URL: "https://api-url" }
      expect(yield* apiUrl(flags(base), { INFISICAL_API_URL: "https://api-url" }, home)).toBe("https://api-url/api")
      expect(yield* apiUrl(flags(base), env, home)).toBe("https://env-domain/api")
      fs.mkdirSync(path.join(home, ".infisical"))
      fs.writeFileSync(path.join(home, ".infisical", "infisical-config.json"), JSON.stringify({ LoggedInUserDomain: "https://logged-in/api" }))
      expect(yield* apiUrl(flags(base), env, home)).toBe("https://logged-in/api")
      fs.mkdirSync(path.join(home, "state"))
      fs.writeFileSync(path.join(home, "state", "r.conf"), "INFISICAL_RELAY_DOMAIN=https://stored/api\n")
      expect(yield* apiUrl(flags(base), env, home)).toBe("https://stored/api")
      expect(yield* apiUrl(flags({ ...base, domain: "https://flag/" }), env, home)).toBe("https://flag/api")
    }))
})

describe("INFISICAL_CUSTOM_HEADERS", () => {
  it("parses bare, double- and single-quoted values", () => {
    expect(parseCustomHeaders(`a=1 b="two words" c='x y' d=`)).toEqual([["a", "1"], ["b", "two words"], ["c", "x y"], ["d", ""]])
    expect(parseCustomHeaders("")).toEqual([])
    expect(parseCustomHeaders("junk a=1")).toEqual([["a", "1"]])
  })
})
