/**
 * The Router end to end (R-RT, R-DFM-5, R-NF-4): a controller, fault managers, counter copies
 * (examples/counter) and a router as real processes on 127.0.0.1, talking real gRPC.
 *
 * What the tests show:
 * 1. Messages sent through the router (unary Send and batched SendStream) reach the counter and
 *    the counters equal the increments the router acknowledged.
 * 2. Per-RS order through a failover: sequence-numbered increments stream through the router
 *    while the active copy of their RS is killed (kill -9). The counter's reply to an increment
 *    is the key's value after it, so the reply to the i-th increment of a fresh key is i exactly
 *    when the increments were applied once each and in sending order.
 * 3. Bounds: with every copy of the app down, the router holds messages up to its per-RS and
 *    total bounds (RESOURCE_EXHAUSTED past them), answers DEADLINE_EXCEEDED when a message's
 *    deadline passes, and delivers what it holds once a copy is back.
 * 4. Bad input on every RPC gets its specific status; nothing else is disturbed.
 * 5. An active copy that stops answering (SIGSTOP) is reported by the router to a fault manager
 *    (R-DFM-5), which finds it dead and has the controller fail over; the held message then
 *    reaches the new active. The app's heartbeat policy is slow on purpose (10 s to notice a
 *    hang), so the fast failover is the router's report at work.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  CopyStatus,
  Mode,
  Role,
  RouterServiceClient,
  RouterServiceService,
  type GetRouterStatsResponse,
  type SendRequest,
  type SendResponse,
  type SendResult,
  type SendStreamRequest,
  type SendStreamResponse,
} from '@understudy/proto';
import { insecureCredentials, unaryCall } from '@understudy/runtime';
import { keys, startCounterCluster, type CounterCluster } from '../harness/cluster';
import { startRouterProc, type Proc } from '../harness/processes';
import { readFileSync } from 'node:fs';
import { waitFor } from '../harness/wait';

// ------------------------------------------------------------------------------- plumbing

/** Outcome of one message: status, details, and the response when OK. */
interface Outcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly res?: SendResponse;
}

function req(app: string, o: Partial<SendRequest> = {}): SendRequest {
  return { app, key: '', rs: 0, hasRs: false, messageId: '', payload: Buffer.alloc(0), deadlineMs: 0, ...o };
}

function inc(key: string, o: Partial<SendRequest> = {}): SendRequest {
  return req('counter', { key, payload: Buffer.from(JSON.stringify({ key, by: 1 })), ...o });
}

function send(client: RouterServiceClient, r: SendRequest, deadlineMs = 30_000): Promise<Outcome> {
  return new Promise((resolve) => {
    client.send(r, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => {
      if (err) resolve({ code: err.code, details: err.details });
      else resolve({ code: grpc.status.OK, details: '', res });
    });
  });
}

function stats(client: RouterServiceClient): Promise<GetRouterStatsResponse> {
  return unaryCall(client.getRouterStats.bind(client), {}, { deadlineMs: 5000 });
}

/** One SendStream: `send` resolves with each item's result. */
class Stream {
  private readonly call: grpc.ClientDuplexStream<SendStreamRequest, SendStreamResponse>;
  private readonly waiting = new Map<number, (r: SendResult) => void>();
  private next = 1;
  /** Results nobody waited for (e.g. correlation id 0 for a malformed frame). */
  readonly unmatched: SendResult[] = [];
  error: Error | undefined;

  constructor(client: RouterServiceClient) {
    this.call = client.sendStream();
    this.call.on('data', (m: SendStreamResponse) => {
      for (const r of m.results) {
        const w = this.waiting.get(r.correlationId);
        if (w) {
          this.waiting.delete(r.correlationId);
          w(r);
        } else this.unmatched.push(r);
      }
    });
    this.call.on('error', (e) => (this.error = e));
  }

  /** Send one batch; one promise per item, in order. */
  send(reqs: readonly SendRequest[]): Promise<SendResult>[] {
    const items = reqs.map((request) => ({ correlationId: this.next++, request }));
    const out = items.map((it) => new Promise<SendResult>((resolve) => this.waiting.set(it.correlationId, resolve)));
    this.call.write({ items });
    return out;
  }

  end(): void {
    this.call.end();
  }
}

/** The app's current active copy of `rs`, from the controller. */
async function activeOf(cl: CounterCluster, rs: number): Promise<string> {
  const s = await cl.status(true);
  const a = s.assignments.find((x) => x.app === 'counter' && x.rs === rs);
  const act = a?.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId;
  assert.ok(act, `rs ${rs} has an active copy`);
  return act;
}

/** Every RS has an ACTIVE and `standbys` STANDBYs, all on UP copies. */
async function settled(cl: CounterCluster, standbys: number, what: string): Promise<void> {
  await waitFor(
    async () => {
      const s = await cl.status(true);
      const up = new Set(s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).map((c) => c.copyId));
      return s.assignments.every((a) => {
        const act = a.members.find((m) => m.role === Role.ROLE_ACTIVE);
        return act && up.has(act.copyId) && a.members.filter((m) => m.role === Role.ROLE_STANDBY && up.has(m.copyId)).length === standbys;
      });
    },
    { what, timeoutMs: 30_000 },
  );
}

async function assertCounters(cl: CounterCluster, expected: Map<string, number>): Promise<void> {
  for (const [key, n] of expected) {
    const v = await cl.routing.query<number>('counter', cl.routing.rsForKey('counter', key), { key });
    assert.equal(v, n, `counter ${key} must equal the increments the router acknowledged`);
  }
}

const value = (r: SendResponse | undefined): number => (JSON.parse(Buffer.from(r!.reply).toString('utf8')) as { value: number }).value;

// ------------------------------------------------------------------------ DFT cluster + router

describe('router, DISTRIBUTED_FAULT_TOLERANT (3 copies, 1 standby per RS)', () => {
  let cl: CounterCluster;
  let router: Proc;
  let client: RouterServiceClient;
  const RS = 4;

  before(async () => {
    cl = await startCounterCluster({
      copies: 3,
      rsCount: RS,
      standbys: 1,
      mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT,
      faultManagers: 1,
      // A hang is noticed by heartbeats only after 10 s: the R-DFM-5 test must not depend on it.
      detection: { heartbeatIntervalMs: 1000, missedHeartbeats: 10 },
    });
    router = await startRouterProc({
      id: 'router-e2e',
      controllers: cl.addresses,
      faultManagers: cl.faultManagerAddresses,
      maxPayloadBytes: 4096,
      attemptTimeoutMs: 2000,
    });
    client = new RouterServiceClient(router.address, insecureCredentials());
  });

  after(async () => {
    client?.close();
    await router?.kill();
    await cl?.stop();
  });

  test('unary Send and SendStream reach the counter; counters equal acknowledged increments', async () => {
    const ks = keys(12);
    const acked = new Map<string, number>();
    // Unary: 5 increments per key, one after the other per key, keys in parallel.
    await Promise.all(
      ks.slice(0, 6).map(async (key) => {
        for (let i = 1; i <= 5; i++) {
          const o = await send(client, inc(key));
          assert.equal(o.code, grpc.status.OK, o.details);
          assert.equal(value(o.res), i, 'reply = value after the increment');
          assert.equal(o.res!.rs, cl.routing.rsForKey('counter', key));
          assert.match(o.res!.messageId, /^router-e2e-/, 'the router assigns a message id when none is given');
          acked.set(key, i);
        }
      }),
    );
    // Stream: 1,200 increments over 6 keys in batches of 100, plus an RS-addressed one.
    const s = new Stream(client);
    const pending: Promise<SendResult>[] = [];
    for (let b = 0; b < 12; b++) pending.push(...s.send(Array.from({ length: 100 }, (_, i) => inc(ks[6 + ((b * 100 + i) % 6)]!))));
    const rsKey = ks[0]!;
    pending.push(...s.send([inc(rsKey, { key: '', rs: cl.routing.rsForKey('counter', rsKey), hasRs: true, messageId: 'by-rs-1' })]));
    const results = await Promise.all(pending);
    s.end();
    for (const r of results) assert.equal(r.statusCode, grpc.status.OK, r.statusMessage);
    for (const key of ks.slice(6)) acked.set(key, 200);
    acked.set(rsKey, 6);
    await assertCounters(cl, acked);
    // A resend of an acknowledged message id is answered from the copy's dedupe table.
    const again = await send(client, inc(rsKey, { key: '', rs: cl.routing.rsForKey('counter', rsKey), hasRs: true, messageId: 'by-rs-1' }));
    assert.equal(again.code, grpc.status.OK);
    assert.equal(again.res!.duplicate, true);
    await assertCounters(cl, acked);
    const st = await stats(client);
    assert.equal(st.routerId, 'router-e2e');
    assert.equal(st.routes, RS);
    assert.ok(st.forwarded >= 1231, `forwarded ${st.forwarded}`);
    assert.equal(st.heldTotal, 0);
  });

  test('bad input on every RPC gets its specific status; the router keeps serving', async () => {
    const key = keys(1)[0]!;
    const expect = async (r: SendRequest, code: grpc.status, re: RegExp): Promise<void> => {
      const o = await send(client, r);
      assert.equal(o.code, code, `${JSON.stringify({ ...r, payload: r.payload.length })}: got ${grpc.status[o.code]} ${o.details}`);
      assert.match(o.details, re);
    };
    // Send
    await expect(req(''), grpc.status.INVALID_ARGUMENT, /app is required/);
    await expect(inc(key, { app: 'no-such-app' }), grpc.status.NOT_FOUND, /no-such-app/);
    await expect(req('counter', { payload: Buffer.from('{}') }), grpc.status.INVALID_ARGUMENT, /needs an address/);
    await expect(inc('', { rs: RS, hasRs: true }), grpc.status.INVALID_ARGUMENT, /rs 4 out of range/);
    const wrongRs = (cl.routing.rsForKey('counter', key) + 1) % RS;
    await expect(inc(key, { rs: wrongRs, hasRs: true }), grpc.status.INVALID_ARGUMENT, /belongs to rs/);
    await expect(inc(key, { messageId: 'x'.repeat(300) }), grpc.status.INVALID_ARGUMENT, /message_id is longer/);
    await expect(inc(key, { payload: Buffer.alloc(5000, 0x20) }), grpc.status.INVALID_ARGUMENT, /payload of 5000 bytes exceeds the router's limit of 4096/);
    await expect(inc(key, { payload: Buffer.from('not json') }), grpc.status.INVALID_ARGUMENT, /not valid JSON/);
    await expect(req('counter', { key, payload: Buffer.from('{"by":1}') }), grpc.status.INVALID_ARGUMENT, /handler rejected/);

    // SendStream: the same problems as items of one batch, each answered with its own status.
    const s = new Stream(client);
    const bad: [SendRequest, grpc.status][] = [
      [req(''), grpc.status.INVALID_ARGUMENT],
      [inc(key, { app: 'no-such-app' }), grpc.status.NOT_FOUND],
      [inc('', { rs: 99, hasRs: true }), grpc.status.INVALID_ARGUMENT],
      [inc(key, { payload: Buffer.alloc(5000, 0x20) }), grpc.status.INVALID_ARGUMENT],
      [inc(key, { payload: Buffer.from('[') }), grpc.status.INVALID_ARGUMENT],
      [inc(key), grpc.status.OK],
    ];
    const rs = await Promise.all(s.send(bad.map(([r]) => r)));
    rs.forEach((r, i) => assert.equal(r.statusCode, bad[i]![1], `stream item ${i}: ${grpc.status[r.statusCode]} ${r.statusMessage}`));
    assert.match(rs[1]!.statusMessage, /no-such-app/);
    s.end();

    // Bytes that do not decode, through a raw client: INVALID_ARGUMENT, never INTERNAL.
    const raw = new grpc.Client(router.address, insecureCredentials());
    const id = (b: Buffer): Buffer => b;
    const garbage = Buffer.from([0x0a, 0x05, 0x61]); // field 1, length 5, 1 byte
    const unaryRaw = (path: string): Promise<grpc.status> =>
      new Promise((resolve) => raw.makeUnaryRequest(path, id, id, garbage, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err) => resolve(err ? err.code : grpc.status.OK)));
    assert.equal(await unaryRaw('/understudy.v1.RouterService/Send'), grpc.status.INVALID_ARGUMENT);
    const statsCode = await unaryRaw('/understudy.v1.RouterService/GetRouterStats');
    assert.ok(statsCode === grpc.status.INVALID_ARGUMENT || statsCode === grpc.status.OK, `GetRouterStats on garbage: ${grpc.status[statsCode]}`);
    const rawStream = raw.makeBidiStreamRequest('/understudy.v1.RouterService/SendStream', id, id, new grpc.Metadata());
    const got: SendResult[] = [];
    rawStream.on('data', (b: Buffer) => got.push(...RouterServiceService.sendStream.responseDeserialize(b).results));
    rawStream.on('error', () => undefined);
    rawStream.write(garbage);
    rawStream.write(RouterServiceService.sendStream.requestSerialize({ items: [{ correlationId: 7, request: inc(key) }] }));
    await waitFor(() => got.length >= 2, { what: 'answers to a garbage frame and a good one on one stream' });
    assert.deepEqual(
      got.map((r) => [r.correlationId, r.statusCode]).sort(),
      [[0, grpc.status.INVALID_ARGUMENT], [7, grpc.status.OK]],
      'a malformed frame is answered with correlation id 0; the stream stays open',
    );
    rawStream.end();
    raw.close();

    // GetRouterStats still answers, nothing is held, and the key got exactly its 2 good increments.
    const st = await stats(client);
    assert.equal(st.heldTotal, 0);
    await assertCounters(cl, new Map([[key, 2]]));
  });

  test('per-RS order through a failover: kill -9 of the active copy mid-stream', async () => {
    const ks = keys(6);
    const victimRs = cl.routing.rsForKey('counter', ks[0]!);
    const victim = await activeOf(cl, victimRs);
    const ROUNDS = 150;
    const WINDOW = 20; // rounds in flight at once (closed loop: the stream never idles)
    const s = new Stream(client);
    const results: Promise<SendResult>[][] = [];
    let killed = false;
    let round = 0;
    const inFlight: Promise<unknown>[] = [];
    while (round < ROUNDS) {
      if (inFlight.length >= WINDOW) await inFlight.shift();
      const batch = s.send(ks.map((k) => inc(k, { deadlineMs: 30_000, messageId: `ord-${k}-${round}` })));
      results.push(batch);
      inFlight.push(Promise.all(batch));
      round++;
      if (round === 50 && !killed) {
        killed = true;
        await cl.copies.get(victim)!.kill();
      }
    }
    const all = await Promise.all(results.map((b) => Promise.all(b)));
    s.end();
    for (let k = 0; k < ks.length; k++) {
      for (let i = 0; i < ROUNDS; i++) {
        const r = all[i]![k]!;
        assert.equal(r.statusCode, grpc.status.OK, `${ks[k]} #${i + 1}: ${grpc.status[r.statusCode]} ${r.statusMessage}`);
        assert.equal(value(r.response), i + 1, `${ks[k]} #${i + 1} must be applied once, after #${i} and before #${i + 2}`);
      }
    }
    const servedBy = all.map((b) => b[0]!.response!.copyId);
    assert.equal(servedBy[0], victim, 'the first messages of the RS went to the victim');
    assert.notEqual(servedBy[ROUNDS - 1], victim, 'the last messages went to the new active');
    await assertCounters(cl, new Map(ks.map((k) => [k, ROUNDS])));
    // Bring the killed copy back so the next tests have their standbys again.
    await cl.restartCopy(victim);
    await settled(cl, 1, `${victim} rejoined`);
  });

  test('R-DFM-5: a copy that stops answering is reported to the fault manager and the flow moves to a backup', async () => {
    const key = keys(1)[0]!;
    const rs = cl.routing.rsForKey('counter', key);
    const first = await send(client, inc(key));
    assert.equal(first.code, grpc.status.OK, first.details);
    const hung = await activeOf(cl, rs);
    assert.equal(first.res!.copyId, hung);
    const before = await stats(client);
    const proc = cl.copies.get(hung)!;
    proc.signal('SIGSTOP');
    try {
      const t0 = Date.now();
      const o = await send(client, inc(key, { deadlineMs: 20_000 }));
      const tookMs = Date.now() - t0;
      assert.equal(o.code, grpc.status.OK, o.details);
      assert.notEqual(o.res!.copyId, hung, 'delivered by the backup');
      assert.equal(value(o.res), 2, 'the backup holds the first increment');
      assert.ok(tookMs < 9000, `failover through the router's report took ${tookMs} ms (heartbeats alone need 10 s)`);
      const after = await stats(client);
      assert.ok(after.unreachableReports > before.unreachableReports, `unreachable reports ${before.unreachableReports} → ${after.unreachableReports}`);
      const fmLog = cl.faultManagers[0]!.output();
      assert.match(fmLog, /"reporter":"router-e2e"/, 'the fault manager logged the router as reporter');
    } finally {
      await proc.kill();
    }
    await cl.restartCopy(hung);
    await settled(cl, 1, `${hung} rejoined`);
  });
});

// ---------------------------------------------------------------- bounds with every copy down

describe('router holding, DISTRIBUTED (1 copy, 2 RS)', () => {
  let cl: CounterCluster;
  let router: Proc;
  let client: RouterServiceClient;

  before(async () => {
    cl = await startCounterCluster({ copies: 1, rsCount: 2, standbys: 0, mode: Mode.MODE_DISTRIBUTED, faultManagers: 1 });
    router = await startRouterProc({ id: 'router-hold', controllers: cl.addresses, faultManagers: cl.faultManagerAddresses, maxHeldPerRs: 5, maxHeldTotal: 8 });
    client = new RouterServiceClient(router.address, insecureCredentials());
  });

  after(async () => {
    client?.close();
    await router?.kill();
    await cl?.stop();
  });

  test('holds within the bounds while the app is down, expires past the deadline, delivers when a copy is back', async () => {
    const ks = keys(64);
    const k0 = ks.filter((k) => cl.routing.rsForKey('counter', k) === 0).slice(0, 2);
    const k1 = ks.filter((k) => cl.routing.rsForKey('counter', k) === 1).slice(0, 2);
    assert.equal(k0.length, 2);
    assert.equal(k1.length, 2);
    const ok = await send(client, inc(k0[0]!));
    assert.equal(ok.code, grpc.status.OK, ok.details);

    // Every copy of the app down; wait until the routes say so (nothing to deliver to).
    await cl.copies.get('c1')!.kill();
    await waitFor(() => !cl.routing.route('counter', 0)?.activeAddress && !cl.routing.route('counter', 1)?.activeAddress, { what: 'routes without an active' });

    // Deadline: a message with a 300 ms deadline is answered DEADLINE_EXCEEDED.
    const t0 = Date.now();
    const late = await send(client, inc(k0[1]!, { deadlineMs: 300 }));
    assert.equal(late.code, grpc.status.DEADLINE_EXCEEDED, late.details);
    assert.match(late.details, /has no active copy/);
    assert.ok(Date.now() - t0 >= 290, 'not before its deadline');
    assert.equal((await stats(client)).expired, 1);

    // Per-RS bound (5): 7 messages to rs 0 → 5 held, 2 refused at once.
    const s = new Stream(client);
    const toRs0 = s.send(Array.from({ length: 7 }, () => inc(k0[1]!, { deadlineMs: 60_000 })));
    const refused0 = await Promise.all(toRs0.slice(5));
    for (const r of refused0) {
      assert.equal(r.statusCode, grpc.status.RESOURCE_EXHAUSTED, r.statusMessage);
      assert.match(r.statusMessage, /maxHeldPerRs 5/);
    }
    // Total bound (8): 4 messages to rs 1 → 3 held, 1 refused.
    const toRs1 = s.send(Array.from({ length: 4 }, () => inc(k1[0]!, { deadlineMs: 60_000 })));
    const refused1 = await toRs1[3]!;
    assert.equal(refused1.statusCode, grpc.status.RESOURCE_EXHAUSTED, refused1.statusMessage);
    assert.match(refused1.statusMessage, /maxHeldTotal 8/);
    const st = await stats(client);
    assert.equal(st.heldTotal, 8);
    assert.deepEqual(st.held.map((h) => [h.app, h.rs, h.held]), [['counter', 0, 5], ['counter', 1, 3]]);
    assert.equal(st.rejectedOverflow, 3);
    // A unary Send is refused the same way.
    const full = await send(client, inc(k1[1]!));
    assert.equal(full.code, grpc.status.RESOURCE_EXHAUSTED);
    // Memory stays bounded under a sustained overflow: 20,000 more messages are all refused, the
    // held count stays at its bound and the router's resident memory does not grow with them.
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${router.pid}/status`, 'utf8'))![1]) * 1024;
    const rssBefore = rss();
    for (let b = 0; b < 40; b++) {
      const flood = await Promise.all(s.send(Array.from({ length: 500 }, () => inc(k1[1]!, { deadlineMs: 60_000 }))));
      assert.ok(flood.every((r) => r.statusCode === grpc.status.RESOURCE_EXHAUSTED), 'every overflow message refused');
    }
    const flooded = await stats(client);
    assert.equal(flooded.heldTotal, 8);
    assert.equal(flooded.rejectedOverflow, 3 + 1 + 20_000);
    const grewMb = (rss() - rssBefore) / 1024 / 1024;
    assert.ok(grewMb < 64, `router RSS grew ${grewMb.toFixed(1)} MB over 20,000 refused messages`);

    // A copy comes back: everything held is delivered.
    await cl.restartCopy('c1');
    const held = await Promise.all([...toRs0.slice(0, 5), ...toRs1.slice(0, 3)]);
    for (const r of held) assert.equal(r.statusCode, grpc.status.OK, r.statusMessage);
    // rs 0 held 5 increments of one key: their replies are 1..5 in order (the copy restarted
    // without state: DISTRIBUTED mode with no checkpoints).
    assert.deepEqual(held.slice(0, 5).map((r) => value(r.response)), [1, 2, 3, 4, 5]);
    s.end();
    await cl.routing.waitReady('counter', 15_000);
    await assertCounters(cl, new Map([[k0[1]!, 5], [k1[0]!, 3]]));
    const end = await stats(client);
    assert.equal(end.heldTotal, 0);
    assert.ok(end.forwarded >= 9);
  });
});
