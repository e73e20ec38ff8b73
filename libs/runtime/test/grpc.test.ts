/**
 * grpc.ts against a real server and client on 127.0.0.1, using the generated
 * ControllerService (so `unaryCall(client.getStatus.bind(client), …)` is type-checked
 * exactly as services will write it).
 */
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { ControllerServiceClient, ControllerServiceService, type GetStatusRequest, type GetStatusResponse } from '@understudy/proto';
import {
  DeadlineExceededError,
  FencedError,
  LEADER_ADDRESS_METADATA_KEY,
  NotActiveError,
  NotFoundError,
  UnavailableError,
  INTERNAL_ERROR_DETAILS,
  InvalidArgumentError,
} from '../src/errors';
import { clientChannelOptions, insecureCredentials, startGrpcServer, unaryCall, unaryHandler, type GrpcServer, type UnaryMethod } from '../src/grpc';
import { createLogger, silentLogger } from '../src/logging';
import { withSafeDeserialize } from '../src/malformed';
import { timed, waitFor } from './util';

const SECRET = 'password=hunter2 at /srv/internal.ts:42';

function response(controllerId: string): GetStatusResponse {
  return { controllerId, leaderId: '', leaderAddress: '', leaderTerm: 0, passive: false, apps: [], copies: [], assignments: [], edges: [], stateVersion: 0, moves: [], standbyMoves: [] };
}

/** Log lines written by the server, parsed. */
const logLines: Array<Record<string, unknown>> = [];
const logSink = new Writable({
  write(chunk: Buffer, _enc, cb) {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logLines.push(JSON.parse(line) as Record<string, unknown>);
    cb();
  },
});

/** Calls that never finish (to test deadlines and forced shutdown). */
const hanging: Array<() => void> = [];

const getStatus = unaryHandler<GetStatusRequest, GetStatusResponse>('GetStatus', createLogger({ service: 'test', level: 'debug', destination: logSink }), (req, call) => {
  switch (req.app) {
    case 'ok':
      return response('c1');
    case 'async-ok':
      return Promise.resolve(response('c2'));
    case 'echo-metadata':
      return response(String(call.metadata.get('x-request-id')[0] ?? ''));
    case 'missing':
      throw new NotFoundError(`no application 'missing'`);
    case 'sync-throw':
      throw new Error(SECRET);
    case 'reject':
      return Promise.reject(new TypeError(SECRET));
    case 'throw-string':
      throw SECRET;
    case 'not-active':
      throw new NotActiveError('copy a1 is STANDBY for rs 3');
    case 'fenced':
      return Promise.reject(new FencedError('token 4 is stale'));
    case 'not-leader':
      throw new UnavailableError('not the leader', { [LEADER_ADDRESS_METADATA_KEY]: '127.0.0.1:7101' });
    case 'no-response':
      return undefined as unknown as GetStatusResponse;
    case 'hang':
      return new Promise<GetStatusResponse>((resolve) => hanging.push(() => resolve(response('late'))));
    default:
      throw new Error(`unexpected test case ${req.app}`);
  }
});

let server: GrpcServer;
let client: ControllerServiceClient;
const req = (app: string): GetStatusRequest => ({ app, includeAssignments: false });
const call = (app: string, deadlineMs?: number): Promise<GetStatusResponse> => unaryCall(client.getStatus.bind(client), req(app), { deadlineMs });

before(async () => {
  server = await startGrpcServer({
    address: '127.0.0.1:0',
    services: [{ definition: ControllerServiceService, implementation: { getStatus } }],
    logger: silentLogger(),
    healthServiceNames: ['understudy.v1.ControllerService'],
  });
  client = new ControllerServiceClient(server.address, insecureCredentials(), clientChannelOptions());
});
after(async () => {
  for (const h of hanging) h();
  client.close();
  await server.shutdown(1000);
});

describe('grpc: server and unaryHandler', () => {
  test('binds a real port when asked for :0', () => {
    assert.ok(server.port > 0);
    assert.equal(server.address, `127.0.0.1:${server.port}`);
  });

  test('a successful call returns the response (sync and async handlers)', async () => {
    assert.equal((await call('ok')).controllerId, 'c1');
    assert.equal((await call('async-ok')).controllerId, 'c2');
  });

  test('request metadata reaches the handler', async () => {
    const res = await unaryCall(client.getStatus.bind(client), req('echo-metadata'), { metadata: { 'x-request-id': 'r-17' } });
    assert.equal(res.controllerId, 'r-17');
  });

  test('a thrown NotFoundError arrives as NOT_FOUND and is a NotFoundError again on the client', async () => {
    await assert.rejects(call('missing'), (e: unknown) => {
      assert.ok(e instanceof NotFoundError, `got ${String(e)}`);
      assert.equal(e.code, grpc.status.NOT_FOUND);
      assert.equal(e.message, `no application 'missing'`);
      return true;
    });
  });

  test('a synchronous throw and a rejected promise both become INTERNAL without the message, and the server stays up', async () => {
    for (const app of ['sync-throw', 'reject', 'throw-string', 'no-response']) {
      await assert.rejects(call(app), (e: unknown) => {
        const se = e as grpc.ServiceError;
        assert.equal(se.code, grpc.status.INTERNAL, `${app}: code`);
        assert.equal(se.details, INTERNAL_ERROR_DETAILS, `${app}: details`);
        assert.ok(!String(se.message).includes('hunter2'), `${app}: no leak`);
        return true;
      });
    }
    assert.equal((await call('ok')).controllerId, 'c1', 'server still serves');
  });

  test('NOT_ACTIVE and a fenced refusal keep their classes over the wire', async () => {
    await assert.rejects(call('not-active'), (e: unknown) => e instanceof NotActiveError && e.message.startsWith('NOT_ACTIVE:'));
    await assert.rejects(call('fenced'), FencedError);
  });

  test('a non-leader answer carries the leader address to the client', async () => {
    await assert.rejects(call('not-leader'), (e: unknown) => {
      assert.ok(e instanceof UnavailableError);
      assert.equal(e.metadata[LEADER_ADDRESS_METADATA_KEY], '127.0.0.1:7101');
      assert.equal(e.retryable, true);
      return true;
    });
  });

  test('client errors are logged at warn with their code; internal ones at error with the real error', async () => {
    logLines.length = 0;
    await call('missing').catch(() => undefined);
    await call('sync-throw').catch(() => undefined);
    const warn = logLines.find((l) => l.level === 'warn');
    const error = logLines.find((l) => l.level === 'error');
    assert.equal(warn?.code, 'NOT_FOUND');
    assert.equal(warn?.method, 'GetStatus');
    assert.equal(error?.code, 'INTERNAL');
    assert.match(String((error?.err as { message?: string })?.message), /hunter2/, 'the server log keeps the real cause');
  });

  test('unaryCall enforces its deadline with DeadlineExceededError', async () => {
    const res = await timed(() => call('hang', 150));
    assert.ok(res.error instanceof DeadlineExceededError, `got ${String(res.error)}`);
    assert.ok(res.ms >= 100 && res.ms < 2000, `after ${res.ms.toFixed(0)} ms`);
  });

  test('unaryCall can be cancelled with an AbortSignal', async () => {
    const ac = new AbortController();
    const p = unaryCall(client.getStatus.bind(client), req('hang'), { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, (e: unknown) => (e as grpc.ServiceError).code === grpc.status.CANCELLED);
  });

  test('unaryCall refuses a non-positive deadline', async () => {
    await assert.rejects(call('ok', 0), RangeError);
  });
});

describe('grpc: malformed requests', () => {
  test('a request that does not decode is INVALID_ARGUMENT ("malformed request") and never reaches the handler', async () => {
    let reached = 0;
    const s = await startGrpcServer({
      address: '127.0.0.1:0',
      services: [
        {
          definition: withSafeDeserialize(ControllerServiceService),
          implementation: {
            getStatus: unaryHandler<GetStatusRequest, GetStatusResponse>('GetStatus', silentLogger(), () => {
              reached++;
              return response('c1');
            }),
          },
        },
      ],
      logger: silentLogger(),
    });
    const raw = new grpc.Client(s.address, insecureCredentials());
    const c = new ControllerServiceClient(s.address, insecureCredentials());
    try {
      const identity = (b: Buffer): Buffer => b;
      const rawCall: UnaryMethod<Buffer, Buffer> = (req, md, opts, cb) =>
        raw.makeUnaryRequest('/understudy.v1.ControllerService/GetStatus', identity, identity, req, md, opts, (err, res) => cb(err, res!));
      // Field 1 (app), length-delimited, with a length that runs past the end.
      await assert.rejects(unaryCall(rawCall, Buffer.from([0x0a, 0x7f, 0x41])), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, `got ${String(e)}`);
        assert.match(e.message, /^malformed request: /);
        return true;
      });
      assert.equal(reached, 0);
      assert.equal((await unaryCall(c.getStatus.bind(c), req('ok'))).controllerId, 'c1', 'well-formed requests still work');
      assert.equal(reached, 1);
    } finally {
      raw.close();
      c.close();
      await s.shutdown(1000);
    }
  });
});

describe('grpc: health', () => {
  const HealthClient = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
  type HealthCheck = UnaryMethod<{ service: string }, { status: string }>;
  let health: grpc.Client;
  before(() => {
    health = new HealthClient(server.address, insecureCredentials());
  });
  after(() => health.close());

  const check = (service: string): Promise<{ status: string }> =>
    unaryCall((health as unknown as { check: HealthCheck }).check.bind(health), { service }, { deadlineMs: 2000 });

  test('reports SERVING for the server and named services, NOT_SERVING after setServing(false)', async () => {
    assert.equal((await check('')).status, 'SERVING');
    assert.equal((await check('understudy.v1.ControllerService')).status, 'SERVING');
    server.setServing('understudy.v1.ControllerService', false);
    assert.equal((await check('understudy.v1.ControllerService')).status, 'NOT_SERVING');
    assert.equal((await check('')).status, 'SERVING', 'only the named service changed');
    server.setServing('understudy.v1.ControllerService', true);
    assert.equal((await check('understudy.v1.ControllerService')).status, 'SERVING');
  });

  test('an unknown service name is NOT_FOUND', async () => {
    await assert.rejects(check('nope'), NotFoundError);
  });
});

describe('grpc: shutdown', () => {
  test('shutdown completes, and then calls fail as UNAVAILABLE', async () => {
    const s = await startGrpcServer({
      address: '127.0.0.1:0',
      services: [{ definition: ControllerServiceService, implementation: { getStatus } }],
      logger: silentLogger(),
    });
    const c = new ControllerServiceClient(s.address, insecureCredentials(), clientChannelOptions());
    try {
      assert.equal((await unaryCall(c.getStatus.bind(c), req('ok'))).controllerId, 'c1');
      await s.shutdown(1000);
      await s.shutdown(); // idempotent
      await assert.rejects(unaryCall(c.getStatus.bind(c), req('ok'), { deadlineMs: 1000 }), UnavailableError);
    } finally {
      c.close();
    }
  });

  test('shutdown reports NOT_SERVING to health watchers, cancels calls still running after the grace period, and completes', async () => {
    const s = await startGrpcServer({
      address: '127.0.0.1:0',
      services: [{ definition: ControllerServiceService, implementation: { getStatus } }],
      logger: silentLogger(),
    });
    const c = new ControllerServiceClient(s.address, insecureCredentials(), clientChannelOptions());
    const HealthClient = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
    const health = new HealthClient(s.address, insecureCredentials()) as unknown as grpc.Client & {
      watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
    };
    try {
      const statuses: string[] = [];
      const watch = health.watch({ service: '' });
      watch.on('data', (m: { status: string }) => statuses.push(m.status));
      watch.on('error', () => undefined); // ended by the forced shutdown
      await waitFor(() => statuses[0] === 'SERVING', { what: 'first health status' });

      const stuck = unaryCall(c.getStatus.bind(c), req('hang'), { deadlineMs: 10_000 });
      stuck.catch(() => undefined);
      // Wait until the server has the call (the handler registers itself), not a fixed time.
      const waiting = hanging.length;
      await waitFor(() => hanging.length > waiting, { what: 'call to reach the handler' });

      const res = await timed(() => s.shutdown(200));
      assert.ok(res.ms >= 150 && res.ms < 2000, `shutdown took ${res.ms.toFixed(0)} ms (grace 200)`);
      await waitFor(() => statuses.includes('NOT_SERVING'), { what: 'NOT_SERVING on the watch stream' });
      await assert.rejects(stuck, (e: unknown) => e instanceof Error && !(e instanceof DeadlineExceededError), 'the client sees the call end, not its 10 s deadline');
    } finally {
      health.close();
      c.close();
    }
  });

  test('bad addresses and options are refused with clear messages', async () => {
    await assert.rejects(startGrpcServer({ address: 'localhost', services: [], logger: silentLogger() }), /expected host:port/);
    await assert.rejects(startGrpcServer({ address: '127.0.0.1:99999', services: [], logger: silentLogger() }), /0\.\.65535/);
    assert.throws(() => clientChannelOptions({ initialReconnectBackoffMs: 2000, maxReconnectBackoffMs: 1000 }), /must not exceed/);
    assert.throws(() => clientChannelOptions({ flowControlWindowBytes: 1000 }), /flowControlWindowBytes must be in 65535\.\./);
    await assert.rejects(startGrpcServer({ address: '127.0.0.1:0', services: [], logger: silentLogger(), flowControlWindowBytes: 2 ** 31 }), /flowControlWindowBytes/);
    await assert.rejects(startGrpcServer({ address: server.address, services: [], logger: silentLogger() }), /could not bind gRPC server to 127\.0\.0\.1:\d+/);
  });
});

describe('grpc: HTTP/2 flow-control window', () => {
  /** What a raw HTTP/2 client sees from the server: its SETTINGS and its connection window. */
  async function windowsOf(address: string): Promise<{ streamWindow: number; connectionWindow: number }> {
    const session = http2.connect(`http://${address}`);
    try {
      await once(session, 'remoteSettings');
      // The connection window arrives as a WINDOW_UPDATE on stream 0, right after the settings.
      let connectionWindow = 0;
      await waitFor(() => (connectionWindow = session.state.remoteWindowSize ?? 0) > 65_535, { what: 'connection window update', timeoutMs: 2000 }).catch(() => undefined);
      return { streamWindow: session.remoteSettings.initialWindowSize ?? 0, connectionWindow };
    } finally {
      session.destroy();
    }
  }

  test('a server advertises a 4 MiB receive window per stream and per connection by default (large requests do not stall every 64 KiB)', async () => {
    const w = await windowsOf(server.address);
    assert.equal(w.streamWindow, 4 * 1024 * 1024);
    assert.equal(w.connectionWindow, 4 * 1024 * 1024);
    assert.equal(clientChannelOptions()['grpc-node.flow_control_window'], 4 * 1024 * 1024);
  });

  test('the window is configurable; 65535 keeps the HTTP/2 default', async () => {
    const big = await startGrpcServer({ address: '127.0.0.1:0', services: [], logger: silentLogger(), flowControlWindowBytes: 1 << 20 });
    const plain = await startGrpcServer({ address: '127.0.0.1:0', services: [], logger: silentLogger(), flowControlWindowBytes: 65_535 });
    try {
      assert.deepEqual(await windowsOf(big.address), { streamWindow: 1 << 20, connectionWindow: 1 << 20 });
      assert.equal((await windowsOf(plain.address)).streamWindow, 65_535);
    } finally {
      await big.shutdown(100);
      await plain.shutdown(100);
    }
  });
});
