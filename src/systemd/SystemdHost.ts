/**
 * SystemdHost: what `relay systemd install|uninstall` needs from the machine, as a swappable
 * service: the platform, the effective uid, the filesystem root every path is written under, and a
 * way to run `systemctl`. Production: the real process, `/`, and `systemctl` from PATH. Tests: a
 * temporary directory as root and a recording fake systemctl, so nothing touches /etc or systemd.
 */
import * as Command from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import { Context, Data, Effect, Layer } from "effect"

export class SystemctlError extends Data.TaggedError("SystemctlError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

export interface SystemdHostShape {
  /** `process.platform`. */
  readonly platform: string
  /** The effective uid (-1 where there is none). */
  readonly euid: number
  /** Prefix of every path written or read ("/" in production). */
  readonly root: string
  /** `systemctl <args>`; fails when it cannot run or exits non-zero. */
  readonly systemctl: (args: ReadonlyArray<string>) => Effect.Effect<void, SystemctlError>
}

export class SystemdHost extends Context.Tag("relay/SystemdHost")<SystemdHost, SystemdHostShape>() {}

export const SystemdHostLive = Layer.effect(
  SystemdHost,
  Effect.gen(function* () {
    const executor = yield* CommandExecutor.CommandExecutor
    const systemctl = (args: ReadonlyArray<string>) =>
      Command.exitCode(Command.make("systemctl", ...args)).pipe(
        Effect.provideService(CommandExecutor.CommandExecutor, executor),
        Effect.mapError((e) => new SystemctlError({ detail: e.message })),
        Effect.flatMap((code) =>
          code === 0 ? Effect.void : Effect.fail(new SystemctlError({ detail: `exit status ${code}` }))
        )
      )
    const host: SystemdHostShape = {
      platform: process.platform,
      euid: process.geteuid?.() ?? -1,
      root: "/",
      systemctl
    }
    return host
  })
)
