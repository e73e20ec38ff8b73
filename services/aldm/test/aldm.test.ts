/**
 * ALDM end to end (R-ALDM): a controller, a fault manager and counter copies as real processes,
 * ALDM as a real process, events over real gRPC and real HTTP. The counters are read back from
 * the active copies and must equal the acknowledged events exactly.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { AldmServiceClient, CopyStatus, Partitioning, type AppSpec, type IngestItem, type IngestResponse, type IngestResult } from '@understudy/proto';
import { UnderstudyError, clientChannelOptions, insecureCredentials, unaryCall } from '@understudy/runtime';
import { keys, startCounterCluster, type CounterCluster } from '../../../test/harness/cluster';
import { startAldmProc, startRouterProc, type AldmProc, type Proc } from '../../../test/harness/processes';
import { waitFor } from '../../../test/harness/wait';

const APP = 'counter';
/** Small payload limit so the 413 case needs no megabytes. */
const MAX_PAYLOAD_BYTES = 16 * 1024;

interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly json: any;
}

/** POST an event (or any body) to ALDM's HTTP endpoint. */
async function post(address: string, app: string, body: unknown, init: { headers?: Record<string, string>; path?: string; method?: string } = {}): Promise<HttpAnswer> {
  const res = await fetch(`http://${address}${init.path ?? `/v1/apps/${encodeURIComponent(app)}/events`}`, {
    method: init.method ?? 'POST',
    headers: { 'content-type': 'application/json', ...init.headers },
    body: init.method === 'GET' ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

async function stats(address: string): Promise<{ inFlight: number; maxInFlight: number; serving: boolean; rejectedOverload: number }> {
  const res = await fetch(`http://${address}/v1/stats`);
  assert.equal(res.status, 200);
  return (await res.json()) as { inFlight: number; maxInFlight: number; serving: boolean; rejectedOverload: number };
}

/** Ingest over gRPC; rejects with the typed error (its `code` is the gRPC status). */
function ingest(client: AldmServiceClient, key: string, payload: unknown, idempotencyKey = '', app = APP): Promise<IngestResponse> {
  return unaryCall(client.ingest.bind(client), { app, key, idempotencyKey, payload: Buffer.from(JSON.stringify(payload)) }, { deadlineMs: 30_000 });
}

/** The gRPC status of a failed call. */
async function codeOf(p: Promise<unknown>): Promise<grpc.status> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof UnderstudyError, `expected a typed error, got ${String(e)}`);
    return e.code;
  }
  assert.fail('expected the call to fail');
}

/** One IngestStream with `items` in one message; resolves with every result. */
function ingestStream(client: AldmServiceClient, items: IngestItem[]): Promise<IngestResult[]> {
  return new Promise((resolve, reject) => {
    const call = client.ingestStream({ deadline: new Date(Date.now() + 30_000) });
    const results: IngestResult[] = [];
    call.on('data', (m: { results: IngestResult[] }) => results.push(...m.results));
    call.on('end', () => resolve(results));
    call.on('error', reject);
    call.write({ items });
    call.end();
  });
}

const item = (correlationId: number, key: string, idempotencyKey = ''): IngestItem => ({
  correlationId,
  request: { app: APP, key, idempotencyKey, payload: Buffer.from(JSON.stringify({ key, by: 1 })) },
});

/** Value of `key` on the active copy of the RS the routing table maps it to. */
function valueOf(cl: CounterCluster, key: string): Promise<number> {
  return cl.routing.query<number>(APP, cl.routing.rsForKey(APP, key), { key });
}

/** Every key's counter equals its acknowledged events. */
async function assertCounted(cl: CounterCluster, acked: ReadonlyMap<string, number>): Promise<void> {
  for (const [key, n] of acked) assert.equal(await valueOf(cl, key), n, `counter of ${key}`);
}

describe('ALDM, direct delivery (controller + fault manager + 3 counter copies)', () => {
  let cl: CounterCluster;
  let aldm: AldmProc;
  let client: AldmServiceClient;

  before(async () => {
    cl = await startCounterCluster({ copies: 3, rsCount: 4, faultManagers: 1, detection: { heartbeatIntervalMs: 100, missedHeartbeats: 10 } });
    aldm = await startAldmProc({ id: 'aldm-direct', controllers: cl.addresses, maxPayloadBytes: MAX_PAYLOAD_BYTES, deadlineMs: 20_000 });
    client = new AldmServiceClient(aldm.address, insecureCredentials(), clientChannelOptions());
  });

  after(async () => {
    client?.close();
    await aldm?.kill();
    await cl?.stop();
  });

  test('events over gRPC (unary and stream) and HTTP reach the counter; counters = acknowledged events', async () => {
    const ks = keys(6);
    const acked = new Map<string, number>();
    const ack = (k: string): void => void acked.set(k, (acked.get(k) ?? 0) + 1);
    for (let i = 0; i < 24; i++) {
      const key = ks[i % ks.length]!;
      if (i % 2 === 0) {
        const r = await ingest(client, key, { key, by: 1 });
        assert.equal(r.rs, cl.routing.rsForKey(APP, key), 'rs as the app declares');
        assert.equal(r.duplicate, false);
        assert.match(r.messageId, /^[0-9a-f-]{36}$/, 'assigned message id (UUID)');
        assert.deepEqual(JSON.parse(Buffer.from(r.reply).toString()), { key, value: (acked.get(key) ?? 0) + 1 });
      } else {
        const r = await post(aldm.httpAddress, APP, { key, payload: { key, by: 1 } });
        assert.equal(r.status, 200, JSON.stringify(r.json));
        assert.equal(r.json.rs, cl.routing.rsForKey(APP, key));
        assert.equal(r.json.duplicate, false);
        assert.ok(r.json.epoch >= 1);
        assert.deepEqual(r.json.reply, { key, value: (acked.get(key) ?? 0) + 1 });
      }
      ack(key);
    }
    const results = await ingestStream(client, ks.map((k, i) => item(100 + i, k)));
    assert.deepEqual(results.map((r) => r.correlationId).sort(), ks.map((_, i) => 100 + i).sort());
    for (const r of results) {
      assert.equal(r.statusCode, 0, r.statusMessage);
      ack(ks[r.correlationId - 100]!);
    }
    await assertCounted(cl, acked);
  });

  test('an idempotency key makes a resend a duplicate, applied once (HTTP, gRPC and stream)', async () => {
    const [key] = keys(1) as [string];
    const first = await post(aldm.httpAddress, APP, { key, idempotencyKey: 'order-1', payload: { key, by: 5 } });
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.equal(first.json.messageId, `${APP}/order-1`, 'the id is the idempotency key, namespaced by the app');
    assert.equal(first.json.duplicate, false);
    const again = await post(aldm.httpAddress, APP, { key, idempotencyKey: 'order-1', payload: { key, by: 5 } });
    assert.equal(again.status, 200);
    assert.equal(again.json.duplicate, true);
    assert.deepEqual(again.json.reply, first.json.reply, 'a duplicate is answered with the first reply');
    const overGrpc = await ingest(client, key, { key, by: 5 }, 'order-1');
    assert.equal(overGrpc.duplicate, true);
    assert.equal(overGrpc.messageId, `${APP}/order-1`);
    const [streamed] = await ingestStream(client, [{ ...item(7, key, 'order-1') }]);
    assert.equal(streamed?.statusCode, 0);
    assert.equal(streamed?.response?.duplicate, true);
    // A different idempotency key is a different event.
    const other = await post(aldm.httpAddress, APP, { key, idempotencyKey: 'order-2', payload: { key, by: 5 } });
    assert.equal(other.json.duplicate, false);
    assert.equal(await valueOf(cl, key), 10);
  });

  test('bad input gets a precise error and the service keeps serving', async () => {
    const [key] = keys(1) as [string];
    const a = aldm.httpAddress;
    const cases: [string, Promise<HttpAnswer>, number, string, RegExp][] = [
      ['unknown app', post(a, 'nosuchapp', { key, payload: 1 }), 404, 'NOT_FOUND', /nosuchapp/],
      ['missing key', post(a, APP, { payload: { key } }), 400, 'INVALID_ARGUMENT', /key is required/],
      ['key not a string', post(a, APP, { key: 42 }), 400, 'INVALID_ARGUMENT', /key must be a string/],
      ['malformed JSON', post(a, APP, '{"key": "x", '), 400, 'INVALID_ARGUMENT', /malformed JSON/],
      ['not an object', post(a, APP, '[1,2]'), 400, 'INVALID_ARGUMENT', /must be a JSON object/],
      ['unknown field', post(a, APP, { key, idempotency_key: 'x' }), 400, 'INVALID_ARGUMENT', /unknown field "idempotency_key"/],
      ['oversized payload', post(a, APP, { key, payload: 'x'.repeat(MAX_PAYLOAD_BYTES + 10) }), 413, 'INVALID_ARGUMENT', /exceeds the limit/],
      ['oversized body', post(a, APP, { key, payload: 'x'.repeat(MAX_PAYLOAD_BYTES + 100 * 1024) }), 413, 'INVALID_ARGUMENT', /exceeds the limit/],
      ['bad app name', post(a, 'Bad App', { key }), 400, 'INVALID_ARGUMENT', /not a valid application name/],
      ['not JSON content', post(a, APP, 'key=x', { headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'INVALID_ARGUMENT', /not JSON/],
      ['wrong method', post(a, APP, undefined, { method: 'GET' }), 405, 'UNIMPLEMENTED', /GET is not allowed/],
      ['wrong method (PUT)', post(a, APP, { key }, { method: 'PUT' }), 405, 'UNIMPLEMENTED', /PUT is not allowed/],
      ['wrong path', post(a, APP, { key }, { path: '/v1/events' }), 404, 'NOT_FOUND', /no such path/],
      ['idempotency key too long', post(a, APP, { key, idempotencyKey: 'i'.repeat(129) }), 400, 'INVALID_ARGUMENT', /idempotency key is longer/],
    ];
    for (const [what, p, status, code, re] of cases) {
      const r = await p;
      assert.equal(r.status, status, `${what}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json?.error?.code, code, what);
      assert.match(r.json.error.message, re, what);
    }
    assert.equal((await post(a, APP, undefined, { method: 'GET' })).headers.get('allow'), 'POST');

    assert.equal(await codeOf(ingest(client, key, { key }, '', 'nosuchapp')), grpc.status.NOT_FOUND);
    assert.equal(await codeOf(ingest(client, '', { key })), grpc.status.INVALID_ARGUMENT);
    assert.equal(await codeOf(ingest(client, key, 'x'.repeat(MAX_PAYLOAD_BYTES + 10))), grpc.status.INVALID_ARGUMENT);
    assert.equal(
      await codeOf(unaryCall(client.ingest.bind(client), { app: APP, key, idempotencyKey: '', payload: Buffer.from('{not json') }, { deadlineMs: 10_000 })),
      grpc.status.INVALID_ARGUMENT,
    );
    // Bytes that are not an IngestRequest at all.
    const raw = new grpc.Client(aldm.address, insecureCredentials());
    const malformed = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest('/understudy.v1.AldmService/Ingest', (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x0a, 0xff, 0xff, 0xff]), (err) => resolve(err)),
    );
    raw.close();
    assert.equal(malformed?.code, grpc.status.INVALID_ARGUMENT);
    const [bad] = await ingestStream(client, [{ correlationId: 9, request: undefined }]);
    assert.equal(bad?.statusCode, grpc.status.INVALID_ARGUMENT);

    // Still serving, and nothing of the above was applied.
    const ok = await post(a, APP, { key, payload: { key, by: 1 } });
    assert.equal(ok.status, 200);
    assert.equal((await ingest(client, key, { key, by: 1 })).rs, cl.routing.rsForKey(APP, key));
    assert.equal(await valueOf(cl, key), 2);
  });

  test('back-pressure: at the in-flight bound, HTTP 429 and gRPC RESOURCE_EXHAUSTED instead of queueing', async () => {
    const bp = await startAldmProc({ id: 'aldm-bp', controllers: cl.addresses, maxInFlight: 1 });
    const bpClient = new AldmServiceClient(bp.address, insecureCredentials(), clientChannelOptions());
    try {
      const [key] = keys(1) as [string];
      // A client still sending its body holds the only slot (slots are taken before the body is read).
      const body = JSON.stringify({ key, idempotencyKey: 'slow-1', payload: { key, by: 1 } });
      const [host, port] = bp.httpAddress.split(':') as [string, string];
      const slow = http.request({ host, port: Number(port), method: 'POST', path: `/v1/apps/${APP}/events`, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } });
      const slowAnswer = new Promise<{ status: number; json: { duplicate: boolean } }>((resolve, reject) => {
        slow.on('response', (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as { duplicate: boolean } }));
        });
        slow.on('error', reject);
      });
      slow.write(body.slice(0, 10));
      await waitFor(async () => (await stats(bp.httpAddress)).inFlight === 1, { what: 'the slow request holding the slot' });

      const refused = await post(bp.httpAddress, APP, { key, payload: { key, by: 1 } });
      assert.equal(refused.status, 429);
      assert.equal(refused.json.error.code, 'RESOURCE_EXHAUSTED');
      assert.equal(refused.headers.get('retry-after'), '1');
      assert.equal(await codeOf(ingest(bpClient, key, { key, by: 1 })), grpc.status.RESOURCE_EXHAUSTED);
      const [streamed] = await ingestStream(bpClient, [item(1, key)]);
      assert.equal(streamed?.statusCode, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal((await stats(bp.httpAddress)).rejectedOverload, 3);

      // The held event completes, and the slot is free again.
      slow.end(body.slice(10));
      const done = await slowAnswer;
      assert.equal(done.status, 200);
      assert.equal(done.json.duplicate, false);
      assert.equal((await post(bp.httpAddress, APP, { key, payload: { key, by: 1 } })).status, 200);
      assert.equal(await valueOf(cl, key), 2, 'only the acknowledged events were applied');
    } finally {
      bpClient.close();
      await bp.kill();
    }
  });

  test('kill -9 of the active copy during a stream of events: every acknowledged event counted once', async () => {
    const ks = keys(8);
    const acked = new Map<string, number>();
    let total = 0;
    let running = true;
    const errors: string[] = [];
    // Each event is resent with its idempotency key until acknowledged (what a client does).
    const sendUntilAcked = async (worker: number, n: number): Promise<void> => {
      const key = ks[(worker * 7 + n) % ks.length]!;
      const idem = `kill-${worker}-${n}`;
      const deadline = Date.now() + 40_000;
      for (;;) {
        try {
          if (worker % 2 === 0) {
            await ingest(client, key, { key, by: 1 }, idem);
          } else {
            const r = await post(aldm.httpAddress, APP, { key, idempotencyKey: idem, payload: { key, by: 1 } });
            if (r.status !== 200) throw new Error(`HTTP ${r.status} ${JSON.stringify(r.json)}`);
          }
          acked.set(key, (acked.get(key) ?? 0) + 1);
          total++;
          return;
        } catch (e) {
          errors.push(`${idem}: ${(e as Error).message}`);
          if (Date.now() > deadline) throw e;
        }
      }
    };
    const workers = Array.from({ length: 6 }, async (_, w) => {
      for (let n = 0; running; n++) await sendUntilAcked(w, n);
    });
    try {
      await waitFor(() => total >= 60, { what: '60 events acknowledged before the kill', timeoutMs: 30_000 });
      const s = await cl.status();
      const victim = s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).sort((a, b) => b.activeCount - a.activeCount)[0]!;
      assert.ok(victim.activeCount > 0);
      const atKill = total;
      await cl.copies.get(victim.copyId)!.kill();
      await waitFor(async () => (await cl.status()).copies.find((c) => c.copyId === victim.copyId)?.status === CopyStatus.COPY_STATUS_OUT_OF_SERVICE, {
        what: `${victim.copyId} declared failed`,
        timeoutMs: 20_000,
      });
      await waitFor(() => total >= atKill + 120, { what: '120 more events acknowledged after the failover', timeoutMs: 40_000 });
    } finally {
      running = false;
      await Promise.all(workers);
    }
    try {
      await assertCounted(cl, acked);
    } catch (e) {
      // The failed attempts (each resent until acknowledged) tell what the failover looked like.
      throw new Error(`${(e as Error).message}\nfailed attempts (${errors.length}):\n${errors.slice(0, 20).join('\n')}`);
    }
    assert.equal([...acked.values()].reduce((x, y) => x + y, 0), total);
  });
});

describe('ALDM with RANGE partitioning', () => {
  let cl: CounterCluster;
  let aldm: AldmProc;

  before(async () => {
    // RS 0: keys < "h", RS 1: "h" <= key < "p", RS 2: key >= "p".
    cl = await startCounterCluster({ copies: 2, rsCount: 3, rangeStarts: ['h', 'p'] });
    aldm = await startAldmProc({ id: 'aldm-range', controllers: cl.addresses });
  });

  after(async () => {
    await aldm?.kill();
    await cl?.stop();
  });

  test('keys land on the RS their range declares', async () => {
    const expected: [string, number][] = [
      ['apple', 0], ['g~', 0], ['Zulu', 0], ['h', 1], ['kiwi', 1], ['oz', 1], ['p', 2], ['pear', 2], ['zebra', 2], ['é', 2],
    ];
    for (const [key, rs] of expected) {
      const r = await post(aldm.httpAddress, APP, { key, payload: { key, by: 3 } });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.rs, rs, `${key} → RS ${rs}`);
    }
    // Each key's state is on its declared RS, and only there.
    for (const [key, rs] of expected) {
      for (let other = 0; other < 3; other++) {
        assert.equal(await cl.routing.query<number>(APP, other, { key }), other === rs ? 3 : 0, `${key} on RS ${other}`);
      }
    }
  });

  test('the controller keeps the declared ranges, refuses bad ones and refuses to change them', async () => {
    const s = await cl.status();
    const spec = s.apps.find((a) => a.spec?.name === APP)?.spec;
    assert.equal(spec?.partitioning, Partitioning.PARTITIONING_RANGE);
    assert.deepEqual(spec?.rangeStarts, ['h', 'p']);
    const apply = (app: AppSpec): Promise<grpc.status> => codeOf(cl.ctl.withLeader((c) => unaryCall(c.applyTopology.bind(c), { topology: { apps: [app], edges: [] } })));
    const base: AppSpec = { ...spec!, detection: undefined };
    assert.equal(await apply({ ...base, name: 'ranged', rangeStarts: ['p', 'h'] }), grpc.status.INVALID_ARGUMENT, 'unsorted starts');
    assert.equal(await apply({ ...base, name: 'ranged', rangeStarts: ['h'] }), grpc.status.INVALID_ARGUMENT, 'rs_count - 1 starts needed');
    assert.equal(await apply({ ...base, name: 'hashed', partitioning: Partitioning.PARTITIONING_HASH }), grpc.status.INVALID_ARGUMENT, 'starts on a HASH app');
    assert.equal(await apply({ ...base, rangeStarts: ['h', 'q'] }), grpc.status.FAILED_PRECONDITION, 'moving a split of a declared app');
    assert.equal(await apply({ ...base, partitioning: Partitioning.PARTITIONING_HASH, rangeStarts: [] }), grpc.status.FAILED_PRECONDITION, 'RANGE -> HASH');
  });
});

describe('ALDM through a router (--routers)', () => {
  let cl: CounterCluster;
  let router: Proc;
  let aldm: AldmProc;
  let client: AldmServiceClient;

  before(async () => {
    cl = await startCounterCluster({ copies: 2, rsCount: 4 });
    router = await startRouterProc({ id: 'router-aldm', controllers: cl.addresses });
    aldm = await startAldmProc({ id: 'aldm-router', routers: [router.address] });
    client = new AldmServiceClient(aldm.address, insecureCredentials(), clientChannelOptions());
  });

  after(async () => {
    client?.close();
    await aldm?.kill();
    await router?.kill();
    await cl?.stop();
  });

  test('events over HTTP and gRPC reach the counter through the router; duplicates applied once', async () => {
    const ks = keys(4);
    const acked = new Map<string, number>();
    for (let i = 0; i < 16; i++) {
      const key = ks[i % ks.length]!;
      if (i % 2 === 0) {
        const r = await post(aldm.httpAddress, APP, { key, idempotencyKey: `r-${i}`, payload: { key, by: 1 } });
        assert.equal(r.status, 200, JSON.stringify(r.json));
        assert.equal(r.json.rs, cl.routing.rsForKey(APP, key));
        assert.equal(r.json.messageId, `${APP}/r-${i}`);
      } else {
        const r = await ingest(client, key, { key, by: 1 });
        assert.equal(r.rs, cl.routing.rsForKey(APP, key));
      }
      acked.set(key, (acked.get(key) ?? 0) + 1);
    }
    const dup = await post(aldm.httpAddress, APP, { key: ks[0], idempotencyKey: 'r-0', payload: { key: ks[0], by: 1 } });
    assert.equal(dup.status, 200);
    assert.equal(dup.json.duplicate, true);
    assert.equal((await post(aldm.httpAddress, APP, { key: 'x', payload: 1 }, { path: '/v1/apps/nosuchapp/events' })).status, 404);
    await assertCounted(cl, acked);
  });
});
