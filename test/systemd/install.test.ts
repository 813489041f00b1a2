/**
 * `infisical relay systemd install|uninstall` (protocol.md §1.2; checklist 60, 61) on a fake host:
 * a temporary directory as filesystem root and a recording systemctl (SystemdHost), so nothing
 * touches /etc or systemd. The token install consumes the enrollment token at install time against
 * the in-process control plane, and the installed files then start a relay.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, ConfigProvider, Effect, Exit, Layer, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cli } from "../../src/Cli.ts"
import { type InstallOptions, installRelayService, uninstallRelayService } from "../../src/systemd/install.ts"
import { SystemctlError, SystemdHost, type SystemdHostShape } from "../../src/systemd/SystemdHost.ts"
import { type ControlPlaneHandle, LogCapture, requestsTo, runRelay, startControlPlane, waitForRelayLog } from "../controlplane/support.ts"

let cp: ControlPlaneHandle
beforeAll(async () => {
  cp = await startControlPlane({ relayAuthSecret: "systemd-secret" })
})
afterAll(() => cp?.close())

interface FakeHost {
  readonly root: string
  readonly calls: Array<ReadonlyArray<string>>
  readonly host: SystemdHostShape
  readonly file: (p: string) => string
  readonly mode: (p: string) => number
  readonly exists: (p: string) => boolean
}

const fakeHost = (options: { platform?: string; euid?: number; failing?: ReadonlyArray<string>; logrotate?: boolean } = {}): FakeHost => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "relay-systemd-"))
  fs.mkdirSync(path.join(root, "etc/systemd/system"), { recursive: true })
  if (options.logrotate !== false) fs.mkdirSync(path.join(root, "etc/logrotate.d"), { recursive: true })
  const calls: Array<ReadonlyArray<string>> = []
  const at = (p: string) => path.join(root, p)
  return {
    root,
    calls,
    host: {
      platform: options.platform ?? "linux",
      euid: options.euid ?? 0,
      root,
      systemctl: (args) =>
        Effect.suspend(() => {
          calls.push(args)
          return (options.failing ?? []).includes(args[0]!)
            ? Effect.fail(new SystemctlError({ detail: "exit status 5" }))
            : Effect.void
        })
    },
    file: (p) => fs.readFileSync(at(p), "utf8"),
    mode: (p) => fs.statSync(at(p)).mode & 0o777,
    exists: (p) => fs.existsSync(at(p))
  }
}

const platform = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)

/** `infisical <args>` in-process on the fake host; resolves with the exit. */
const runCli = (host: FakeHost, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.runPromise(
    Effect.exit(cli(["node", "infisical", ...args])).pipe(
      Effect.provideService(SystemdHost, host.host),
      Effect.provide(platform),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ HOME: host.root, ...env }))))
    )
  )

const noOptions: InstallOptions = {
  name: Option.none(),
  nameFlag: Option.none(),
  token: Option.none(),
  enrollMethod: Option.none(),
  relayId: Option.none(),
  logFile: Option.none(),
  domain: Option.none(),
  type: Option.none(),
  host: Option.none(),
  relayAuthSecret: Option.none()
}

/** The core of install/uninstall with captured logs; resolves with the exit. */
const run = <A, E>(host: FakeHost, effect: Effect.Effect<A, E, any>, env: Record<string, string> = {}) => {
  const logs = new LogCapture()
  return Effect.runPromise(
    Effect.exit(effect).pipe(
      Effect.provideService(SystemdHost, host.host),
      Effect.provide(Layer.mergeAll(platform, logs.layer)),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ HOME: host.root, ...env }))))
    ) as Effect.Effect<Exit.Exit<A, E>>
  ).then((exit) => ({ exit, logs }))
}

const startupError = (exit: Exit.Exit<unknown, unknown>) => {
  if (!Exit.isFailure(exit)) throw new Error("expected a failure")
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value as { readonly _tag: string; readonly error: string; readonly messages: ReadonlyArray<string> }
}

const UNIT = (name: string, execStart = "infisical relay start") => `[Unit]
Description=Infisical Relay Service (${name})
After=network.target

[Service]
Type=notify
NotifyAccess=all
EnvironmentFile=/etc/infisical/relays/${name}.env.conf
ExecStart=${execStart}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
InaccessibleDirectories=/home
PrivateTmp=yes
LimitCORE=infinity
LimitNOFILE=1000000
LimitNPROC=60000
LimitRTPRIO=infinity
LimitRTTIME=7000000

[Install]
WantedBy=multi-user.target
`

describe("relay systemd install", () => {
  it("60: --enroll-method=token consumes the token at install time, writes state, env file and a Type=notify unit, enables it; the result starts", async () => {
    const created = await cp.cp((c) => c.createRelay({ name: "sd-token", host: "sd-token.test", authMethod: { method: "token" } }))
    const { token } = await cp.cp((c) => c.generateEnrollmentToken(created.id))
    const host = fakeHost()
    const before = (await cp.requests()).length
    const exit = await runCli(host, ["relay", "systemd", "install", "sd-token", "--enroll-method=token", `--token=${token}`, `--domain=${cp.url}`])
    expect(exit._tag, Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "").toBe("Success")

    const [login] = requestsTo((await cp.requests()).slice(before), "/api/v2/relays/login")
    expect(login!.rawBody).toBe(JSON.stringify({ method: "token", token }))
    expect(login!.headers["user-agent"]).toBe("cli")
    // The token is spent: a second exchange is refused.
    const reuse = await runCli(fakeHost(), ["relay", "systemd", "install", "sd-token", "--enroll-method=token", `--token=${token}`, `--domain=${cp.url}`])
    expect(startupError(reuse)).toMatchObject({ error: "relay login: 400 Invalid enrollment token", messages: ["enrollment failed"] })

    const state = host.file("/etc/infisical/relays/sd-token.conf")
    expect(state).toMatch(/^INFISICAL_RELAY_ACCESS_TOKEN=ey[^\n]+\nINFISICAL_RELAY_DOMAIN=http:\/\/127\.0\.0\.1:\d+\n$/)
    expect(state).toContain(`INFISICAL_RELAY_DOMAIN=${cp.url}\n`)
    expect(state).not.toContain(token)
    expect(host.mode("/etc/infisical/relays/sd-token.conf")).toBe(0o600)
    expect(host.file("/etc/infisical/relays/sd-token.env.conf")).toBe(
      `INFISICAL_RELAY_ENROLL_METHOD=token\nINFISICAL_RELAY_NAME=sd-token\nINFISICAL_API_URL=${cp.url}\n`
    )
    expect(host.mode("/etc/infisical/relays/sd-token.env.conf")).toBe(0o600)
    expect(host.file("/etc/systemd/system/sd-token.service")).toBe(UNIT("sd-token"))
    expect(host.mode("/etc/systemd/system/sd-token.service")).toBe(0o644)
    expect(host.exists("/etc/logrotate.d/sd-token")).toBe(false)
    expect(host.calls).toEqual([["daemon-reload"], ["enable", "sd-token"]])

    // What systemd would run: `relay start` with the env file, finding the stored access token.
    const env = Object.fromEntries(
      host.file("/etc/infisical/relays/sd-token.env.conf").trim().split("\n").map((l) => l.split(/=(.*)/s).slice(0, 2) as [string, string])
    )
    const relay = await runRelay({
      controlPlane: cp,
      tlsHost: "sd-token.test",
      flags: { domain: "" },
      env: { ...env, INFISICAL_RELAY_STATE_DIR: path.join(host.root, "etc/infisical/relays") }
    })
    try {
      await waitForRelayLog(relay, /^Relay is reachable by Infisical$/)
      expect(relay.logs.messages()).toContain("Using stored access token...")
    } finally {
      await relay.stop()
    }
  })

  it("logs upstream's messages", async () => {
    const host = fakeHost()
    const { exit, logs } = await run(
      host,
      installRelayService({ ...noOptions, name: Option.some("sd-msgs"), enrollMethod: Option.some("aws"), relayId: Option.some("r-1") })
    )
    expect(exit._tag).toBe("Success")
    expect(logs.messages()).toEqual([
      "Successfully installed systemd service 'sd-msgs'",
      "To start the service, run: sudo systemctl start sd-msgs",
      "To enable the service on boot, run: sudo systemctl enable sd-msgs",
      "Successfully installed and enabled sd-msgs service",
      "To start the service, run: sudo systemctl start sd-msgs"
    ])
  })

  it("--enroll-method=aws: no login at install time, env file with the relay id", async () => {
    const host = fakeHost()
    const before = (await cp.requests()).length
    const exit = await runCli(host, ["relay", "systemd", "install", "sd-aws", "--enroll-method=aws", "--relay-id=0b9e0c4e-1111-4222-8333-444455556666", "--domain=https://infisical.example.com"])
    expect(exit._tag).toBe("Success")
    expect((await cp.requests()).length).toBe(before)
    expect(host.file("/etc/infisical/relays/sd-aws.env.conf")).toBe(
      "INFISICAL_RELAY_ID=0b9e0c4e-1111-4222-8333-444455556666\nINFISICAL_RELAY_ENROLL_METHOD=aws\nINFISICAL_API_URL=https://infisical.example.com\nINFISICAL_RELAY_NAME=sd-aws\n"
    )
    expect(host.exists("/etc/infisical/relays/sd-aws.conf")).toBe(false)
    expect(host.file("/etc/systemd/system/sd-aws.service")).toBe(UNIT("sd-aws"))
  })

  it("--type=instance with --log-file: tee'd ExecStart (the relay exec'd, so $MAINPID is the relay), the log file, logrotate; the secret from env", async () => {
    const host = fakeHost()
    const exit = await runCli(
      host,
      ["relay", "systemd", "install", "sd-inst", "--type=instance", "--host=10.0.0.5", "--log-file=/var/log/infisical/../infisical/relay.log"],
      { INFISICAL_RELAY_AUTH_SECRET: "instance-secret-xyz" }
    )
    expect(exit._tag, Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "").toBe("Success")
    expect(host.file("/etc/infisical/relays/sd-inst.env.conf")).toBe(
      "INFISICAL_RELAY_NAME=sd-inst\nINFISICAL_RELAY_HOST=10.0.0.5\nINFISICAL_RELAY_TYPE=instance\nINFISICAL_RELAY_AUTH_SECRET=instance-secret-xyz\n"
    )
    expect(host.file("/etc/systemd/system/sd-inst.service")).toBe(
      UNIT("sd-inst", `/bin/bash -c 'exec infisical relay start > >(tee "/var/log/infisical/relay.log") 2>&1'`)
    )
    expect(host.exists("/var/log/infisical/relay.log")).toBe(true)
    expect(host.mode("/var/log/infisical/relay.log")).toBe(0o644)
    expect(host.mode("/var/log/infisical")).toBe(0o755)
    expect(host.file("/etc/logrotate.d/sd-inst")).toBe(
      "/var/log/infisical/relay.log {\n    daily\n    rotate 7\n    compress\n    delaycompress\n    missingok\n    notifempty\n    create 0644 root root\n}"
    )
  })

  it("legacy org relay: --host and a token from INFISICAL_TOKEN; no logrotate.d directory only warns", async () => {
    const host = fakeHost({ logrotate: false })
    const { exit, logs } = await run(
      host,
      installRelayService({
        ...noOptions,
        name: Option.some("sd-org"),
        host: Option.some("relay.example.com"),
        domain: Option.some("https://eu.infisical.com"),
        logFile: Option.some("/var/log/relay.log")
      }),
      { INFISICAL_TOKEN: "org-identity-token" }
    )
    expect(exit._tag).toBe("Success")
    expect(host.file("/etc/infisical/relays/sd-org.env.conf")).toBe(
      "INFISICAL_RELAY_NAME=sd-org\nINFISICAL_RELAY_HOST=relay.example.com\nINFISICAL_RELAY_TYPE=org\nINFISICAL_API_URL=https://eu.infisical.com\nINFISICAL_TOKEN=org-identity-token\n"
    )
    expect(logs.messages()).toContain("logrotate.d directory does not exist. log files will not be pruned automatically.")
    expect(logs.text()).not.toContain("org-identity-token")
  })

  it("refuses what upstream refuses, with its messages", async () => {
    const cases: ReadonlyArray<[FakeHost, InstallOptions, Record<string, string>, string, ReadonlyArray<string>]> = [
      [fakeHost({ platform: "darwin" }), { ...noOptions, name: Option.some("x") }, {}, "systemd service installation is only supported on Linux", []],
      [fakeHost({ euid: 1000 }), { ...noOptions, name: Option.some("x") }, {}, "systemd service installation requires root/sudo privileges", []],
      [fakeHost(), { ...noOptions, enrollMethod: Option.some("token") }, {}, "relay name is required (provide as positional argument or --name flag)", []],
      [fakeHost(), { ...noOptions, type: Option.some("instance") }, {}, "relay name is required (provide as positional argument or --name flag)", []],
      [fakeHost(), { ...noOptions, name: Option.some("x"), enrollMethod: Option.some("token") }, {}, "--token is required when --enroll-method=token", []],
      [fakeHost(), { ...noOptions, name: Option.some("x"), enrollMethod: Option.some("aws") }, {}, "--relay-id is required when --enroll-method=aws", []],
      [fakeHost(), { ...noOptions, name: Option.some("x"), type: Option.some("instance") }, {}, "--host flag is required for instance relays", []],
      [
        fakeHost(),
        { ...noOptions, name: Option.some("x"), type: Option.some("instance"), host: Option.some("h") },
        {},
        "--relay-auth-secret flag or INFISICAL_RELAY_AUTH_SECRET env must be set for instance relays",
        []
      ],
      [fakeHost(), { ...noOptions, name: Option.some("x") }, {}, "--host flag is required", []],
      [fakeHost(), { ...noOptions, name: Option.some("x"), host: Option.some("h") }, {}, "--token flag or INFISICAL_TOKEN env must be set", []],
      [
        fakeHost(),
        { ...noOptions, name: Option.some("x"), enrollMethod: Option.some("aws"), relayId: Option.some("r"), logFile: Option.some("relative/relay.log") },
        {},
        "log-file must be an absolute path: relative/relay.log",
        ["Failed to install relay systemd service"]
      ]
    ]
    for (const [host, options, env, error, messages] of cases) {
      const { exit } = await run(host, installRelayService(options), env)
      expect(startupError(exit)).toMatchObject({ _tag: "StartupError", error, messages })
      expect(host.calls).toEqual([])
      expect(fs.readdirSync(path.join(host.root, "etc/systemd/system"))).toEqual([])
    }
  })

  it("a relative --log-file fails before the enrollment token is spent", async () => {
    const before = (await cp.requests()).length
    const { exit } = await run(
      fakeHost(),
      installRelayService({
        ...noOptions,
        name: Option.some("sd-rel"),
        enrollMethod: Option.some("token"),
        token: Option.some(Redacted.make("gwe_unused")),
        domain: Option.some(cp.url),
        logFile: Option.some("logs/relay.log")
      })
    )
    expect(startupError(exit).error).toBe("log-file must be an absolute path: logs/relay.log")
    expect((await cp.requests()).length).toBe(before)
  })

  it("refuses a name that conflicts with a legacy single-service install", async () => {
    const host = fakeHost()
    fs.writeFileSync(path.join(host.root, "etc/systemd/system/infisical-relay.service"), "[Unit]\n")
    fs.mkdirSync(path.join(host.root, "etc/infisical"), { recursive: true })
    fs.writeFileSync(path.join(host.root, "etc/infisical/relay.conf"), "INFISICAL_RELAY_NAME=old-relay\nINFISICAL_RELAY_HOST=h\n")
    for (const name of ["old-relay", "infisical-relay"]) {
      const { exit } = await run(host, installRelayService({ ...noOptions, name: Option.some(name), enrollMethod: Option.some("aws"), relayId: Option.some("r") }))
      expect(startupError(exit)).toMatchObject({
        error: `cannot install relay '${name}': it conflicts with the existing legacy relay service; uninstall it first with: sudo infisical relay systemd uninstall`,
        messages: ["Failed to install relay systemd service"]
      })
    }
    const { exit } = await run(host, installRelayService({ ...noOptions, name: Option.some("new-relay"), enrollMethod: Option.some("aws"), relayId: Option.some("r") }))
    expect(exit._tag).toBe("Success")
  })

  it("a failing systemctl enable is reported as upstream does", async () => {
    const host = fakeHost({ failing: ["enable"] })
    const { exit } = await run(host, installRelayService({ ...noOptions, name: Option.some("sd-en"), enrollMethod: Option.some("aws"), relayId: Option.some("r") }))
    expect(startupError(exit)).toMatchObject({ error: "exit status 5", messages: ["Failed to enable relay systemd service"] })
  })
})

describe("relay systemd uninstall", () => {
  it("61: stops, disables and removes the unit, env file, state conf and logrotate file, then reloads", async () => {
    const host = fakeHost()
    const installed = await runCli(
      host,
      ["relay", "systemd", "install", "sd-gone", "--type=instance", "--host=h", "--relay-auth-secret=s", "--log-file=/var/log/sd-gone.log"]
    )
    expect(installed._tag).toBe("Success")
    fs.writeFileSync(path.join(host.root, "etc/infisical/relays/sd-gone.conf"), "INFISICAL_RELAY_ACCESS_TOKEN=t\n")
    host.calls.length = 0
    const { exit, logs } = await run(host, uninstallRelayService(Option.some("sd-gone")))
    expect(exit._tag).toBe("Success")
    expect(host.calls).toEqual([["stop", "sd-gone"], ["disable", "sd-gone"], ["daemon-reload"]])
    for (const p of ["/etc/systemd/system/sd-gone.service", "/etc/infisical/relays/sd-gone.env.conf", "/etc/infisical/relays/sd-gone.conf", "/etc/logrotate.d/sd-gone"]) {
      expect(host.exists(p), p).toBe(false)
    }
    expect(logs.messages()).toEqual(["Successfully uninstalled Infisical Relay systemd service 'sd-gone'"])
  })

  it("without a name: the legacy infisical-relay service and /etc/infisical/relay.conf; stop/disable failures only warn", async () => {
    const host = fakeHost({ failing: ["stop", "disable"] })
    fs.writeFileSync(path.join(host.root, "etc/systemd/system/infisical-relay.service"), "[Unit]\n")
    fs.mkdirSync(path.join(host.root, "etc/infisical/relays"), { recursive: true })
    fs.writeFileSync(path.join(host.root, "etc/infisical/relay.conf"), "INFISICAL_RELAY_NAME=old\n")
    fs.writeFileSync(path.join(host.root, "etc/infisical/relays/infisical-relay.conf"), "KEEP=1\n")
    const exit = await runCli(host, ["relay", "systemd", "uninstall"])
    expect(exit._tag).toBe("Success")
    expect(host.calls).toEqual([["stop", "infisical-relay"], ["disable", "infisical-relay"], ["daemon-reload"]])
    expect(host.exists("/etc/systemd/system/infisical-relay.service")).toBe(false)
    expect(host.exists("/etc/infisical/relay.conf")).toBe(false)
    expect(host.exists("/etc/infisical/relays/infisical-relay.conf")).toBe(true)

    const warned = await run(fakeHost({ failing: ["stop"] }), uninstallRelayService(Option.none()))
    expect(startupError(warned.exit)).toMatchObject({
      error: "no relay service found for 'infisical-relay'",
      messages: ["Failed to uninstall relay systemd service"]
    })
  })

  it("refuses off Linux and without root", async () => {
    for (const [host, error] of [
      [fakeHost({ platform: "darwin" }), "systemd service uninstallation is only supported on Linux"],
      [fakeHost({ euid: 501 }), "systemd service uninstallation requires root/sudo privileges"]
    ] as const) {
      const { exit } = await run(host, uninstallRelayService(Option.some("x")))
      expect(startupError(exit).error).toBe(error)
    }
  })
})

describe("the unit's ExecStart and ExecReload, run as systemd would", () => {
  /**
   * systemd runs ExecStart's command line and sends ExecReload's `kill -HUP $MAINPID` to the
   * process it started. A stand-in `infisical` on PATH logs each SIGHUP (as the relay logs a reload)
   * and runs until SIGTERM; both forms of ExecStart run under the real /bin/bash. Its handlers are
   * installed before it logs "started", which is what the test waits for before signalling.
   */
  const startUnderBash = (execStart: string, dir: string) => {
    fs.writeFileSync(
      path.join(dir, "infisical"),
      `#!/bin/sh\nexec "${process.execPath}" -e 'process.on("SIGHUP", () => console.log("reloaded")); process.on("SIGTERM", () => process.exit(0)); console.log("started"); setInterval(() => {}, 1000)'\n`,
      { mode: 0o755 }
    )
    const inner = /^\/bin\/bash -c '(.*)'$/.exec(execStart)?.[1] ?? execStart
    // Its own process group, so that the test can end everything the command line started.
    return spawn("/bin/bash", ["-c", inner], { env: { PATH: `${dir}:${process.env.PATH ?? ""}` }, stdio: "ignore", detached: true })
  }
  /** SIGKILL to the whole group: in upstream's form the relay outlives the bash that was $MAINPID. */
  const killGroup = (child: ChildProcess) => {
    try {
      process.kill(-child.pid!, "SIGKILL")
    } catch {
      // already gone
    }
  }
  const waitForFile = async (file: string, text: string, child: ChildProcess) => {
    const deadline = Date.now() + 10_000
    while (!(fs.existsSync(file) && fs.readFileSync(file, "utf8").includes(text))) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited before "${text}" was logged`)
      if (Date.now() > deadline) throw new Error(`"${text}" not logged within 10 s`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  it("with --log-file: SIGHUP to $MAINPID reaches the relay, which keeps running and logging through tee", async () => {
    const host = fakeHost()
    const exit = await runCli(host, ["relay", "systemd", "install", "sd-hup", "--type=instance", "--host=10.0.0.5", "--log-file=/var/log/hup.log"], {
      INFISICAL_RELAY_AUTH_SECRET: "s"
    })
    expect(exit._tag).toBe("Success")
    const unit = host.file("/etc/systemd/system/sd-hup.service")
    expect(unit).toContain("ExecReload=/bin/kill -HUP $MAINPID\n")
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-unit-"))
    const log = path.join(dir, "relay.log")
    const execStart = /^ExecStart=(.*)$/m.exec(unit)![1]!.replace("/var/log/hup.log", log)
    const mainPid = startUnderBash(execStart, dir)
    try {
      await waitForFile(log, "started", mainPid)
      mainPid.kill("SIGHUP") // ExecReload
      await waitForFile(log, "reloaded", mainPid)
      expect(mainPid.exitCode).toBe(null)
      mainPid.kill("SIGTERM")
      expect(await new Promise((r) => mainPid.once("exit", (code) => r(code)))).toBe(0)
    } finally {
      killGroup(mainPid)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("upstream's `| tee` form would not survive ExecReload: SIGHUP kills the bash that is $MAINPID", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-unit-"))
    const log = path.join(dir, "relay.log")
    const mainPid = startUnderBash(`/bin/bash -c 'infisical relay start 2>&1 | tee "${log}"'`, dir)
    try {
      await waitForFile(log, "started", mainPid)
      mainPid.kill("SIGHUP")
      const signal = await new Promise((r) => mainPid.once("exit", (_code, sig) => r(sig)))
      expect(signal).toBe("SIGHUP")
    } finally {
      killGroup(mainPid)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
