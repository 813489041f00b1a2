/**
 * Process-level gauges sampled on scrape: event-loop lag (how late timers fire: the first sign of
 * an overloaded relay) and the expiry times of the certificates in use.
 */
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Effect, Layer, Metric, Stream } from "effect"
import { Credentials } from "../Credentials.ts"

export const eventLoopLagSeconds = Metric.gauge("relay_event_loop_lag_seconds", {
  description: "Event-loop delay, p99 over the last scrape interval"
})
export const eventLoopLagMaxSeconds = Metric.gauge("relay_event_loop_lag_max_seconds", {
  description: "Event-loop delay, maximum over the last scrape interval"
})
export const tlsCertificateExpiry = Metric.gauge("relay_tls_certificate_expiry_timestamp_seconds", {
  description: "notAfter of the relay's TLS server certificate in use, Unix time"
})
export const sshCertificateExpiry = Metric.gauge("relay_ssh_host_certificate_expiry_timestamp_seconds", {
  description: "valid-before of the relay's SSH host certificate in use, Unix time"
})

export const heapUsedBytes = Metric.gauge("relay_process_heap_used_bytes", {
  description: "V8 heap in use, sampled on each scrape"
})
export const heapTotalBytes = Metric.gauge("relay_process_heap_total_bytes", {
  description: "V8 heap reserved (used and free), sampled on each scrape"
})
export const bufferBytes = Metric.gauge("relay_process_buffer_bytes", {
  description: "Buffers and ArrayBuffers held outside the V8 heap (socket and packet data), sampled on each scrape"
})
export const residentMemoryBytes = Metric.gauge("relay_process_resident_memory_bytes", {
  description: "Resident set size of the relay process, sampled on each scrape"
})

/** Start the event-loop monitor; `sample` publishes and resets it with the memory gauges (called on each scrape). */
export const EventLoopMonitor = Effect.acquireRelease(
  Effect.sync(() => {
    const histogram = monitorEventLoopDelay({ resolution: 10 })
    histogram.enable()
    return histogram
  }),
  (histogram) => Effect.sync(() => histogram.disable())
).pipe(
  Effect.tap(() => Effect.all([Metric.set(eventLoopLagSeconds, 0), Metric.set(eventLoopLagMaxSeconds, 0)])),
  Effect.map((histogram) =>
    Effect.gen(function* () {
      const memory = process.memoryUsage()
      yield* Metric.set(heapUsedBytes, memory.heapUsed)
      yield* Metric.set(heapTotalBytes, memory.heapTotal)
      yield* Metric.set(bufferBytes, memory.arrayBuffers)
      yield* Metric.set(residentMemoryBytes, memory.rss)
      if (histogram.count === 0) return
      yield* Metric.set(eventLoopLagSeconds, histogram.percentile(99) / 1e9)
      yield* Metric.set(eventLoopLagMaxSeconds, histogram.max / 1e9)
      histogram.reset()
    })
  )
)

/** Keep the certificate expiry gauges on the bundle in use. */
export const CertificateExpiryLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const credentials = yield* Credentials
    const publish = (bundle: Effect.Effect.Success<typeof credentials.current>) =>
      Effect.all([
        Metric.set(tlsCertificateExpiry, bundle.tlsNotAfter.getTime() / 1000),
        Metric.set(sshCertificateExpiry, Number(bundle.ssh.hostCertificate.validBefore))
      ])
    yield* Effect.flatMap(credentials.current, publish)
    yield* credentials.changes.pipe(Stream.runForEach(publish), Effect.forkScoped, Effect.interruptible)
  })
)
