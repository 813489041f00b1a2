/**
 * sd_notify for `Type=notify` units (protocol.md §1.1, §1.2): `READY=1` once both listeners are
 * bound and `Relay server started successfully` was logged, `STOPPING=1` when shutdown begins.
 * Nothing happens unless `NOTIFY_SOCKET` is set, which only systemd does.
 *
 * How: Node has no AF_UNIX datagram sockets, and the npm packages that add them are native addons
 * (a build step on every install). systemd ships `systemd-notify`, so wherever `NOTIFY_SOCKET` is
 * set that binary exists: the relay runs `systemd-notify --pid=<relay pid> <STATE>`. `--pid` makes
 * the datagram carry the relay's pid as sender (systemd-notify may fake its credentials as root),
 * so systemd attributes it to the service even if the short-lived helper has already exited (the
 * classic systemd-notify race); it also adds `MAINPID=<relay pid>`, which keeps systemd watching
 * the relay itself when the unit wraps it in `bash -c '... | tee'` (`--log-file`).
 *
 * A notification that cannot be delivered is logged as a warning, never fatal.
 */
import { execFile } from "node:child_process"
import * as FileSystem from "@effect/platform/FileSystem"
import { Config, Effect, Option, type Scope } from "effect"

/** Where `systemd-notify` is looked for: `$PATH`, then the usual system directories. */
const searchDirs = (path: string): ReadonlyArray<string> => [
  ...path.split(":").filter((d) => d !== ""),
  "/usr/bin",
  "/bin",
  "/usr/local/bin",
  "/usr/sbin",
  "/sbin"
]

export const findSystemdNotify = Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Config.string("PATH").pipe(Config.withDefault(""), Effect.orElseSucceed(() => ""))
  for (const dir of searchDirs(path)) {
    const candidate = `${dir.replace(/\/+$/, "")}/systemd-notify`
    if (yield* fs.exists(candidate).pipe(Effect.orElseSucceed(() => false))) return Option.some(candidate)
  }
  return Option.none<string>()
})

/** `NOTIFY_SOCKET`, when set and not empty. */
export const notifySocket = Config.string("NOTIFY_SOCKET").pipe(
  Config.option,
  Effect.map(Option.filter((s) => s !== "")),
  Effect.orElseSucceed(() => Option.none<string>())
)

/** The argv of one notification (without the binary). */
export const notifyArgs = (state: string, pid: number): ReadonlyArray<string> => [`--pid=${pid}`, state]

/** Send one notification (`READY=1`, `STOPPING=1`, `STATUS=...`); a no-op without NOTIFY_SOCKET. */
export const sdNotify = (state: string) =>
  Effect.gen(function* () {
    const socket = yield* notifySocket
    if (Option.isNone(socket)) return false
    const binary = yield* findSystemdNotify
    if (Option.isNone(binary)) {
      yield* Effect.logWarning(`NOTIFY_SOCKET is set but systemd-notify was not found; ${state} not sent`)
      return false
    }
    // A plain child process with Node's own kill timer: this also runs from a finalizer, where
    // Effect-level timeouts could not interrupt it.
    const failure = yield* Effect.async<string | undefined>((resume) => {
      const child = execFile(
        binary.value,
        [...notifyArgs(state, process.pid)],
        { env: { ...process.env, NOTIFY_SOCKET: socket.value }, timeout: 5_000 },
        (error, _stdout, stderr) =>
          resume(Effect.succeed(error ? (stderr.trim() || error.message) : undefined))
      )
      return Effect.sync(() => child.kill())
    })
    if (failure !== undefined) {
      yield* Effect.logWarning(`sd_notify ${state} failed: ${failure}`)
      return false
    }
    yield* Effect.logDebug(`sd_notify ${state}`)
    return true
  }).pipe(Effect.withSpan("SdNotify.notify", { attributes: { "sd_notify.state": state } }))

/**
 * `READY=1` now, and `STOPPING=1` when the current scope starts closing (call it after the
 * listeners are up: its finalizer then runs before theirs).
 */
export const notifyReadyUntilStopping: Effect.Effect<void, never, Scope.Scope | FileSystem.FileSystem> = Effect.gen(
  function* () {
    const fs = yield* FileSystem.FileSystem
    if (Option.isNone(yield* notifySocket)) return
    yield* sdNotify("READY=1")
    yield* Effect.addFinalizer(() => sdNotify("STOPPING=1").pipe(Effect.provideService(FileSystem.FileSystem, fs)))
  }
)
