/**
 * telemetry.ts when started late — after grpc-js and the generated clients were loaded
 * (its own file: it needs a process where nothing started telemetry first). Server spans
 * must still appear: startTelemetry re-requires grpc-js so the already-loaded copy is
 * patched. (Client constructors built before it stay unpatched; hence "start first".)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { ControllerServiceClient, ControllerServiceService } from '@understudy/proto';
import { insecureCredentials, silentLogger, startGrpcServer, startTelemetry, unaryCall, unaryHandler } from '../src/index';
import { waitFor } from './util';

test('started after grpc-js was loaded, telemetry still traces the server side', async () => {
  const exporter = new InMemorySpanExporter();
  const telemetry = startTelemetry({ serviceName: 'late', spanProcessors: [new SimpleSpanProcessor(exporter)], otlpEndpoint: '' });
  const server = await startGrpcServer({
    address: '127.0.0.1:0',
    logger: silentLogger(),
    services: [
      {
        definition: ControllerServiceService,
        implementation: {
          getStatus: unaryHandler('GetStatus', silentLogger(), () => ({
            controllerId: 'c1', leaderId: '', leaderAddress: '', leaderTerm: 0, passive: false, apps: [], copies: [], assignments: [], edges: [], stateVersion: 0, moves: [], standbyMoves: [],
          })),
        },
      },
    ],
  });
  const client = new ControllerServiceClient(server.address, insecureCredentials());
  try {
    assert.equal((await unaryCall(client.getStatus.bind(client), { app: '', includeAssignments: false })).controllerId, 'c1');
    const serverSpan = await waitFor(() => exporter.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER), { what: 'server span' });
    assert.match(serverSpan.name, /ControllerService\/GetStatus/);
  } finally {
    client.close();
    await server.shutdown(1000);
    await telemetry.shutdown();
  }
});
