/**
 * OpenTelemetry tracing, configured by the standard OTEL_* environment variables and off when no
 * OTLP endpoint is set (spans are then no-ops). The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT /
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS and friends itself;
 * OTEL_SERVICE_NAME names the service; OTEL_TRACES_EXPORTER=none turns tracing off.
 *
 * The OpenTelemetry SDK is imported only when tracing is on: loading it costs the relay ~9 MiB of
 * resident memory for nothing in the common case (docs/benchmarks.md, "Memory").
 */
import { Config, Effect, Layer, Option } from "effect"

const env = (name: string) =>
  Config.string(name).pipe(Config.option, Effect.map(Option.filter((v) => v !== "")), Effect.orElseSucceed(() => Option.none<string>()))

const loadSdk = Effect.promise(() =>
  Promise.all([
    import("@effect/opentelemetry/NodeSdk"),
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/sdk-trace-base")
  ])
)

export const TracingLive = (serviceVersion: string) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const endpoint = yield* env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
      const base = yield* env("OTEL_EXPORTER_OTLP_ENDPOINT")
      const disabled = Option.contains(yield* env("OTEL_TRACES_EXPORTER"), "none")
      if (disabled || (Option.isNone(endpoint) && Option.isNone(base))) return Layer.empty
      const serviceName = Option.getOrElse(yield* env("OTEL_SERVICE_NAME"), () => "infisical-relay")
      const [NodeSdk, { OTLPTraceExporter }, { BatchSpanProcessor }] = yield* loadSdk
      return NodeSdk.layer(() => ({
        resource: { serviceName, serviceVersion },
        spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter()),
        shutdownTimeout: "3 seconds"
      }))
    })
  )
