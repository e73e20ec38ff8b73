/**
 * OpenTelemetry bootstrap (R-TR-5): traces of every gRPC call, with the context carried in
 * gRPC metadata, so ALDM → Router → copy → standby is one trace in Jaeger.
 *
 * Call {@link startTelemetry} FIRST in a service's entry file, before the modules that
 * create gRPC servers and clients are loaded, and load the rest dynamically:
 *
 * @example
 * // services/router/src/main.ts
 * import { startTelemetry } from '@understudy/runtime';
 * const telemetry = startTelemetry({ serviceName: 'router' });
 * void import('./router').then((m) => m.main({ telemetry }));
 *
 * Why "first": the gRPC instrumentation patches `@grpc/grpc-js` through a require hook.
 * {@link startTelemetry} re-requires grpc-js itself, so a copy already loaded (this package
 * loads it) is patched too and servers are traced whenever they are created after it. But
 * ts-proto builds client constructors when `@understudy/proto` is loaded, capturing grpc-js
 * functions: clients from a proto module loaded BEFORE startTelemetry make no client spans
 * and propagate no context. So: runtime import, startTelemetry, then everything else.
 * Only gRPC is instrumented; pino lines get `trace_id`/`span_id` from the active span
 * (logging.ts); ioredis is not instrumented (no instrumentation package is installed).
 *
 * Export: an OTLP/gRPC trace exporter only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
 * (e.g. `http://jaeger:4317`). With neither an endpoint nor span processors, no SDK runs at
 * all (spans would go nowhere) and the API stays a no-op. OTel metrics and logs
 * exporters are off (metrics go through prom-client; logs through pino).
 */
import { SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';

/** Options of {@link startTelemetry}. */
export interface TelemetryOptions {
  /** `service.name` of every span (e.g. `router`, `aggregator`). */
  readonly serviceName: string;
  /** Extra span processors (tests pass `new SimpleSpanProcessor(new InMemorySpanExporter())`). */
  readonly spanProcessors?: readonly SpanProcessor[];
  /**
   * OTLP gRPC endpoint for traces; empty or unset means no exporter.
   * @default process.env.OTEL_EXPORTER_OTLP_ENDPOINT
   */
  readonly otlpEndpoint?: string;
}

/** A started telemetry pipeline. */
export interface Telemetry {
  /** Flush pending spans and stop. Idempotent. */
  shutdown(): Promise<void>;
}

let started = false;

/**
 * Start tracing for this process (once per process). Returns a handle whose `shutdown`
 * flushes spans; call it on SIGTERM before exiting.
 */
export function startTelemetry(options: TelemetryOptions): Telemetry {
  if (!options.serviceName) throw new TypeError('startTelemetry: serviceName must be a non-empty string');
  if (started) throw new Error('startTelemetry: already started in this process (call it once, in the entry file)');
  started = true;

  const processors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
  const endpoint = options.otlpEndpoint ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '';
  if (endpoint === '' && processors.length === 0) {
    // Nobody collects the spans: run no SDK at all. The API stays a no-op (spans are
    // non-recording), so no gRPC call pays for instrumentation, context propagation and span
    // objects, and the process does not load the SDK's modules. Measured on the failover
    // bench's copies: see the issue-3 note of this change.
    return { shutdown: () => Promise.resolve() };
  }
  // Loaded lazily, like the exporter: only needed when someone collects the traces.
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const { GrpcInstrumentation } = require('@opentelemetry/instrumentation-grpc') as typeof import('@opentelemetry/instrumentation-grpc');
  const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  if (endpoint !== '') {
    const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc') as typeof import('@opentelemetry/exporter-trace-otlp-grpc');
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint })));
  }
  /* eslint-enable @typescript-eslint/no-require-imports */

  const sdk = new NodeSDK({
    serviceName: options.serviceName,
    // Explicit (even when empty) so NodeSDK does not create its env-default OTLP exporters.
    spanProcessors: processors,
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [new GrpcInstrumentation({ ignoreGrpcMethods: ['Check', 'Watch'] })],
  });
  sdk.start();
  // The require hook patches a module when it is next required; grpc-js may already be
  // in the module cache (this package and NodeSDK load it), so require it once now.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('@grpc/grpc-js');

  let stopping: Promise<void> | null = null;
  return {
    shutdown(): Promise<void> {
      stopping ??= sdk.shutdown();
      return stopping;
    },
  };
}

/** The tracer for `name` (a module or component, e.g. `understudy.router`). */
export function tracer(name: string): Tracer {
  return trace.getTracer(name);
}

/**
 * Run `fn` inside a new active span of `tracerName` (child of the current span): the span ends
 * when `fn` settles, with an ERROR status and the exception recorded when it throws.
 */
export async function withSpan<T>(tracerName: string, name: string, attributes: Attributes, fn: (span: Span) => Promise<T> | T): Promise<T> {
  return trace.getTracer(tracerName).startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      span.recordException(err);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
      throw e;
    } finally {
      span.end();
    }
  });
}
