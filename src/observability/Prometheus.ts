/**
 * Prometheus text for Effect's metrics, without hand-rolling the format: @effect/opentelemetry
 * turns the Effect metric registry into an OpenTelemetry MetricProducer, and OpenTelemetry's own
 * Prometheus exporter (its HTTP server disabled) collects and serializes it on each scrape.
 *
 * The OpenTelemetry packages are imported when the layer is built, i.e. only when the status
 * server is on: a relay without `--status-addr` never loads them (docs/benchmarks.md, "Memory").
 */
import { Context, Effect, Layer } from "effect"

export class PrometheusText extends Context.Tag("relay/PrometheusText")<
  PrometheusText,
  { readonly scrape: Effect.Effect<string> }
>() {}

const loadOpenTelemetry = Effect.promise(() =>
  Promise.all([
    import("@effect/opentelemetry/Metrics"),
    import("@effect/opentelemetry/Resource"),
    import("@opentelemetry/exporter-prometheus")
  ])
)

export const PrometheusTextLive = Layer.unwrapScoped(
  Effect.gen(function* () {
    const [Metrics, Resource, { PrometheusExporter, PrometheusSerializer }] = yield* loadOpenTelemetry
    const exporter = new PrometheusExporter({ preventServerStart: true })
    // No target_info / otel_scope_* noise: operators scrape relay_* series.
    const serializer = new PrometheusSerializer(undefined, false, undefined, true, true)
    // Effect's own fiber metrics (effect_*) are on for every runtime's root fiber; they say
    // nothing about the relay, so only relay_* series are exposed.
    const scrape = Effect.promise(() => exporter.collect()).pipe(
      Effect.map(({ resourceMetrics }) =>
        serializer.serialize({
          ...resourceMetrics,
          scopeMetrics: resourceMetrics.scopeMetrics.map((scope) => ({
            ...scope,
            metrics: scope.metrics.filter((m) => m.descriptor.name.startsWith("relay_"))
          }))
        })
      )
    )
    return Layer.merge(
      Layer.succeed(PrometheusText, { scrape }),
      Metrics.layer(() => exporter)
    ).pipe(Layer.provide(Resource.layer({ serviceName: "infisical-relay" })))
  })
)
