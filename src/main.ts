/**
 * The CLI run (loaded by src/bin.ts): parse argv, run the command under NodeRuntime.runMain with
 * the platform layers. Exit codes: 0 after a signal-driven shutdown, 1 on any startup or runtime
 * failure.
 */
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Layer, Option, RuntimeFlags, RuntimeFlagsPatch } from "effect"
import { cli, formatStartupError, VERSION } from "./Cli.ts"
import { TracingLive } from "./observability/Tracing.ts"

const PlatformLive = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici, TracingLive(VERSION))

/** Print a failure once, in upstream's shape; parse errors were already printed by @effect/cli. */
const report = (cause: Cause.Cause<unknown>) =>
  Effect.sync(() => {
    if (Cause.isInterruptedOnly(cause)) return
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure)) {
      const e = failure.value
      if (ValidationError.isValidationError(e)) return
      if (typeof e === "object" && e !== null && "_tag" in e && e._tag === "StartupError") {
        process.stderr.write(formatStartupError(e as Parameters<typeof formatStartupError>[0]))
        return
      }
      const message = e instanceof Error ? e.message : String(e)
      // A port that cannot be bound is one line, as upstream's log.Fatal.
      const isListenError = typeof e === "object" && e !== null && "_tag" in e && e._tag === "ListenError"
      process.stderr.write(isListenError ? `${message}\n` : `error: ${message}\nunable to start relay instance\n`)
      return
    }
    process.stderr.write(`error: ${Cause.pretty(cause)}\n`)
  })

cli(process.argv).pipe(
  Effect.tapErrorCause(report),
  Effect.provide(PlatformLive),
  // Effect's per-fiber runtime metrics would cost every session fiber.
  Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.disable(RuntimeFlags.RuntimeMetrics)),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
