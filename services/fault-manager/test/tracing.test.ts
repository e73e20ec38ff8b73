/**
 * A fault report is one trace (R-TR-5): the fault manager's `fault.detect` span is the parent of
 * the ReportFault client span, and the controller's server span continues the same trace. The
 * controller and the fault manager run in this process (its own process: telemetry starts once,
 * before the generated clients are loaded), with an in-memory span exporter.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { SpanKind } from '@opentelemetry/api';
import { silentLogger, startTelemetry, unaryCall, openStore, type Store } from '@understudy/runtime';
import { waitFor } from '../../../test/harness/wait';

const exporter = new InMemorySpanExporter();
const telemetry = startTelemetry({ serviceName: 'fm-tracing-test', spanProcessors: [new SimpleSpanProcessor(exporter)], otlpEndpoint: '' });
const cleanup: (() => Promise<void> | void)[] = [];

after(async () => {
  for (const f of cleanup.reverse()) await f();
  await telemetry.shutdown();
});

test('fault.detect span → ReportFault client span → controller server span, one trace', async () => {
  // Loaded after startTelemetry so the generated clients are instrumented.
  const grpc = await import('@grpc/grpc-js');
  const proto = await import('@understudy/proto');
  const { ControllerClient } = await import('@understudy/adsm');
  const { startController } = await import('@understudy/system-controller');
  const { startFaultManager } = await import('../src/index');

  const store: Store = await openStore({});
  cleanup.push(() => store.close());
  const controller = await startController({ controllerId: 'ctl-trace', store, logger: silentLogger(), passiveTimeoutMs: 100 });
  cleanup.push(() => controller.stop());
  const ctl = new ControllerClient({ addresses: [controller.address], callTimeoutMs: 10_000 });
  cleanup.push(() => ctl.close());
  await ctl.withLeader((c) =>
    unaryCall(c.applyTopology.bind(c), {
      topology: { apps: [{ name: 'traced', mode: proto.Mode.MODE_DISTRIBUTED, rsCount: 1, standbys: 0, minCopies: 100, partitioning: proto.Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] }], edges: [] },
    }),
  );
  const incarnation = Date.now();
  await ctl.withLeader((c) => unaryCall(c.registerCopy.bind(c), { copyId: 'tc1', app: 'traced', host: 'th', address: '127.0.0.1:1', incarnation }));

  const fm = await startFaultManager({ id: 'fm-trace', controllerAddresses: [controller.address], logger: silentLogger() });
  cleanup.push(() => fm.stop());
  const client = new proto.FaultManagerServiceClient(fm.address, grpc.credentials.createInsecure());
  cleanup.push(() => client.close());
  const stream = client.attach();
  stream.on('error', () => undefined);
  const settings = new Promise((resolve) => stream.once('data', resolve));
  stream.write({ hello: { copyId: 'tc1', incarnation, app: 'traced', host: 'th', address: '127.0.0.1:1' } });
  await settings;
  stream.cancel();

  const detectSpan = await waitFor(() => exporter.getFinishedSpans().find((s) => s.name === 'fault.detect'), { what: 'fault.detect span' });
  assert.equal(detectSpan.attributes['understudy.copy_id'], 'tc1');
  assert.equal(detectSpan.attributes['understudy.incarnation'], incarnation);
  assert.equal(detectSpan.attributes['understudy.fault_kind'], 'CRASH');
  assert.equal(detectSpan.attributes['understudy.host'], 'th');
  assert.equal(typeof detectSpan.attributes['understudy.detection_latency_ms'], 'number');
  assert.equal(detectSpan.attributes['understudy.fault_outcomes'], 'tc1:FAILED_OVER');
  const traceId = detectSpan.spanContext().traceId;
  const rpc = exporter.getFinishedSpans().filter((s) => s.name.includes('ControllerService/ReportFault') && s.spanContext().traceId === traceId);
  const clientSpan = rpc.find((s) => s.kind === SpanKind.CLIENT);
  const serverSpan = rpc.find((s) => s.kind === SpanKind.SERVER);
  assert.ok(clientSpan, 'the ReportFault client span is in the fault.detect trace');
  assert.ok(serverSpan, 'the controller continues the trace');
  assert.equal(clientSpan.parentSpanContext?.spanId, detectSpan.spanContext().spanId);
  assert.equal(serverSpan.parentSpanContext?.spanId, clientSpan.spanContext().spanId);
});
