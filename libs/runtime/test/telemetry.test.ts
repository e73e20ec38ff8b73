/**
 * telemetry.ts, in its own file (its own process): tracing must start before gRPC clients
 * are built. This file follows the pattern services use: import the runtime (which loads
 * grpc-js), start telemetry, then load the generated clients and make a real call.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { SpanKind } from '@opentelemetry/api';
import {
  clientChannelOptions,
  createLogger,
  insecureCredentials,
  startGrpcServer,
  startTelemetry,
  tracer,
  unaryCall,
  unaryHandler,
  silentLogger,
  type GrpcServer,
  type Telemetry,
} from '../src/index';
import { waitFor } from './util';

const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
let server: GrpcServer;
const logLines: Array<Record<string, unknown>> = [];

before(() => {
  telemetry = startTelemetry({ serviceName: 'runtime-test', spanProcessors: [new SimpleSpanProcessor(exporter)], otlpEndpoint: '' });
});
after(async () => {
  await server?.shutdown(1000);
  await telemetry.shutdown();
  await telemetry.shutdown(); // idempotent
});

test('a gRPC call between an in-process server and client is one trace: client span → server span', async () => {
  // Loaded only now, after startTelemetry: ts-proto builds its client constructors at load time.
  const proto = await import('@understudy/proto');
  const logger = createLogger({
    service: 'test',
    destination: new Writable({
      write(chunk: Buffer, _e, cb) {
        for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) logLines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    }),
  });
  server = await startGrpcServer({
    address: '127.0.0.1:0',
    logger: silentLogger(),
    services: [
      {
        definition: proto.ControllerServiceService,
        implementation: {
          getStatus: unaryHandler('GetStatus', logger, () => {
            logger.info('inside the handler');
            return { controllerId: 'c1', leaderId: '', leaderAddress: '', leaderTerm: 0, passive: false, apps: [], copies: [], assignments: [], edges: [], stateVersion: 0, moves: [], standbyMoves: [] };
          }),
        },
      },
    ],
  });
  const client = new proto.ControllerServiceClient(server.address, insecureCredentials(), clientChannelOptions());
  try {
    const res = await unaryCall(client.getStatus.bind(client), { app: '', includeAssignments: false });
    assert.equal(res.controllerId, 'c1');
  } finally {
    client.close();
  }

  const spans = await waitFor(() => {
    const all = exporter.getFinishedSpans().filter((s) => s.name.includes('ControllerService/GetStatus'));
    return all.length >= 2 ? all : undefined;
  }, { what: 'client and server spans' });
  const clientSpan = spans.find((s) => s.kind === SpanKind.CLIENT);
  const serverSpan = spans.find((s) => s.kind === SpanKind.SERVER);
  assert.ok(clientSpan, `client span among ${spans.map((s) => `${s.name}/${s.kind}`).join(', ')}`);
  assert.ok(serverSpan, 'server span');
  assert.equal(serverSpan.spanContext().traceId, clientSpan.spanContext().traceId, 'same trace');
  assert.equal(serverSpan.parentSpanContext?.spanId, clientSpan.spanContext().spanId, 'server span is a child of the client span');
  assert.equal(serverSpan.resource.attributes['service.name'], 'runtime-test');

  const line = logLines.find((l) => l.msg === 'inside the handler');
  assert.equal(line?.trace_id, serverSpan.spanContext().traceId, 'log lines carry the trace id');
});

test('tracer() spans are recorded with parent/child links', async () => {
  const t = tracer('understudy.test');
  await t.startActiveSpan('failover', async (parent) => {
    t.startSpan('promote').end();
    parent.end();
  });
  const failover = exporter.getFinishedSpans().find((s) => s.name === 'failover');
  const promote = exporter.getFinishedSpans().find((s) => s.name === 'promote');
  assert.ok(failover && promote);
  assert.equal(promote.parentSpanContext?.spanId, failover.spanContext().spanId);
});

test('startTelemetry refuses to start twice', () => {
  assert.throws(() => startTelemetry({ serviceName: 'again' }), /already started/);
});
