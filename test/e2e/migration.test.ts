/**
 * Live RS migration end to end (issue 5: R-LM, R-SC, R-TR-4, R-NF-1, R-NF-4): a controller, a
 * fault manager, counter copies (examples/counter) and a router as real processes on 127.0.0.1.
 *
 * What the tests show:
 * 1. DISTRIBUTED_FAULT_TOLERANT: under a steady load of increments, RS move to a caught-up standby
 *    (promoted at once) and to a copy that holds nothing of the RS (it joins as an extra standby,
 *    catches up, takes over, and the source leaves so the RS is back at its replication factor).
 *    Every MoveRs answers from → to, the new epoch and a pause; no increment fails; the counters
 *    equal the acknowledged increments exactly (nothing lost or doubled).
 * 2. Per-RS order through moves via the router: sequence-numbered increments of fresh keys stream
 *    through the router while their RS moves back and forth; the reply to the i-th increment of a
 *    key is i, i.e. they were applied once each and in sending order.
 * 3. A pause is a lease: an RS paused on its active (as a controller would before a move) holds
 *    its messages and serves them once the lease ends, with no controller involved (a controller
 *    that dies mid-move cannot leave an RS stopped); ResumeRs ends a pause early; bad PauseRs
 *    input gets its specific status.
 * 4. Drain is live too: every RS leaves a copy under load, counters exact.
 * 5. Invalid moves (bad input, unknown app / RS / copy, move to the current active, a failed
 *    target, a disabled target) are refused with a clear status and change nothing.
 * 6. DISTRIBUTED (checkpoint-before-ack): moves under load restore the RS from the checkpoint the
 *    paused active wrote; counters exact.
 * 7. FAULT_TOLERANT: a per-RS move is refused (FAILED_PRECONDITION naming switchover).
 * 8. A move whose old active hung (SIGSTOP, not detected yet) does not hold the decision loop:
 *    the fault report cuts the pause short (MoveRs says why it did not pause) and the failover
 *    runs within seconds, not at the pause deadline.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  AdsmServiceClient,
  CopyStatus,
  Mode,
  Role,
  RouterServiceClient,
  type GetStatusResponse,
  type MoveRsRequest,
  type MoveRsResponse,
  type RsAssignment,
  type SendRequest,
  type SendResult,
  type SendStreamRequest,
  type SendStreamResponse,
} from '@understudy/proto';
import { insecureCredentials, unaryCall } from '@understudy/runtime';
import { runCli } from '../../cli/src/cli';
import { CounterLoad, keys, startCounterCluster, type CounterCluster } from '../harness/cluster';
import { startRouterProc, type Proc } from '../harness/processes';
import { waitFor } from '../harness/wait';

// ------------------------------------------------------------------------------- plumbing

interface Outcome<T> {
  readonly code: grpc.status;
  readonly details: string;
  readonly res?: T;
}

/** MoveRs on the leader, as an outcome (the status is what the tests look at). */
async function move(cl: CounterCluster, r: Partial<MoveRsRequest> & { rs: number; toCopyId: string }, deadlineMs = 60_000): Promise<Outcome<MoveRsResponse>> {
  try {
    const res = await cl.ctl.withLeader((c) => unaryCall(c.moveRs.bind(c), { app: 'counter', reason: 'e2e', ...r }, { deadlineMs }), deadlineMs);
    return { code: grpc.status.OK, details: '', res };
  } catch (e) {
    const err = e as { code?: number; message: string };
    return { code: typeof err.code === 'number' ? err.code : grpc.status.UNKNOWN, details: err.message };
  }
}

function assertOk(o: Outcome<MoveRsResponse>, what: string): MoveRsResponse {
  assert.equal(grpc.status[o.code], 'OK', `${what}: ${o.details}`);
  return o.res!;
}

function assertRefused(o: Outcome<unknown>, code: grpc.status, re: RegExp, what: string): void {
  assert.equal(grpc.status[o.code], grpc.status[code], `${what}: got ${grpc.status[o.code]} ${o.details}`);
  assert.match(o.details, re, `${what}: message`);
}

function assignment(s: GetStatusResponse, rs: number): RsAssignment {
  const a = s.assignments.find((x) => x.app === 'counter' && x.rs === rs);
  assert.ok(a, `rs ${rs} has an assignment`);
  return a;
}

const activeOf = (a: RsAssignment): string | undefined => a.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId;
const standbysOf = (a: RsAssignment): string[] => a.members.filter((m) => m.role === Role.ROLE_STANDBY).map((m) => m.copyId);

/**
 * Every RS has an ACTIVE and `standbys` STANDBYs on UP copies and no pending move; with
 * `caughtUp`, no standby is still catching up either (an idle RS reports its standbys caught up
 * only with its next message, so only ask for it under load).
 */
async function settled(cl: CounterCluster, standbys: number, what: string, caughtUp = false): Promise<GetStatusResponse> {
  return waitFor(
    async () => {
      const s = await cl.status(true);
      const up = new Set(s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).map((c) => c.copyId));
      const ok =
        !s.passive &&
        s.moves.length === 0 &&
        s.assignments.every((a) => {
          const act = activeOf(a);
          const sbs = a.members.filter((m) => m.role === Role.ROLE_STANDBY);
          return act && up.has(act) && sbs.length === standbys && sbs.every((m) => up.has(m.copyId) && (!caughtUp || !m.catchingUp));
        });
      return ok ? s : undefined;
    },
    { what, timeoutMs: 30_000 },
  );
}

/**
 * No background work left that could move an RS by itself: a short burst over every RS lets the
 * actives report their standbys caught up, then every standby is caught up and the actives are
 * balanced (balancing that waited for caught-up standbys has run).
 */
async function quiesce(cl: CounterCluster, standbys: number): Promise<GetStatusResponse> {
  return waitFor(
    async () => {
      await new CounterLoad(cl.routing, keys(24), 4).burst(48);
      const s = await settled(cl, standbys, 'settled', true);
      const counts = s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).map((c) => c.activeCount);
      return Math.max(...counts) - Math.min(...counts) <= 1 ? s : undefined;
    },
    { what: 'cluster quiescent (standbys caught up, actives balanced)', timeoutMs: 60_000, intervalMs: 200 },
  );
}

/** The counters equal what the load saw acknowledged, key by key. */
async function assertExact(load: CounterLoad, what: string): Promise<void> {
  assert.deepEqual(load.failures.slice(0, 5), [], `${what}: every increment was acknowledged`);
  const values = await load.values();
  let total = 0;
  for (const [key, n] of load.acked) {
    assert.equal(values.get(key), n, `${what}: counter ${key} must equal its acknowledged increments (nothing lost or doubled)`);
    total += n;
  }
  assert.ok(total > 0, `${what}: some increments were acknowledged`);
}

/** Wait until the load acknowledged `n` more increments (it keeps flowing through moves). */
async function progressed(load: CounterLoad, n: number, what: string): Promise<void> {
  const target = load.count + n;
  await waitFor(() => load.count >= target, { what: `${what}: load acknowledged ${n} more increments`, timeoutMs: 30_000 });
}

/** One router SendStream: `send` resolves with each item's result. */
class Stream {
  private readonly call: grpc.ClientDuplexStream<SendStreamRequest, SendStreamResponse>;
  private readonly waiting = new Map<number, (r: SendResult) => void>();
  private next = 1;

  constructor(client: RouterServiceClient) {
    this.call = client.sendStream();
    this.call.on('data', (m: SendStreamResponse) => {
      for (const r of m.results) {
        const w = this.waiting.get(r.correlationId);
        this.waiting.delete(r.correlationId);
        w?.(r);
      }
    });
    this.call.on('error', () => undefined);
  }

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

function inc(key: string, o: Partial<SendRequest> = {}): SendRequest {
  return { app: 'counter', key, rs: 0, hasRs: false, messageId: '', payload: Buffer.from(JSON.stringify({ key, by: 1 })), deadlineMs: 0, ...o };
}

const replyValue = (r: SendResult): number => (JSON.parse(Buffer.from(r.response!.reply).toString('utf8')) as { value: number }).value;

// ------------------------------------------------------------------ DISTRIBUTED_FAULT_TOLERANT

describe('live migration, DISTRIBUTED_FAULT_TOLERANT (3 copies, 1 standby per RS)', () => {
  let cl: CounterCluster;
  let router: Proc;
  let routerClient: RouterServiceClient;
  const RS = 4;

  before(async () => {
    cl = await startCounterCluster({ copies: 3, rsCount: RS, standbys: 1, mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, faultManagers: 1 });
    router = await startRouterProc({ id: 'router-mig', controllers: cl.addresses, faultManagers: cl.faultManagerAddresses });
    routerClient = new RouterServiceClient(router.address, insecureCredentials());
    await settled(cl, 1, 'cluster settled');
  });

  after(async () => {
    routerClient?.close();
    await router?.kill();
    await cl?.stop();
  });

  test('moves under load, to caught-up standbys and to non-members: counters exact, replication factor restored', async (t) => {
    const load = new CounterLoad(cl.routing, keys(16), 6);
    // A pause that times out (a very loaded machine) does not stop the move; most must pause.
    let paused = 0;
    load.start();
    try {
      await progressed(load, 100, 'warm-up');
      // 1. To the standby of each RS, twice (there and back): promoted at once, paused first.
      for (let round = 0; round < 2; round++) {
        for (let rs = 0; rs < RS; rs++) {
          const a = assignment(await cl.status(true), rs);
          const from = activeOf(a)!;
          const to = standbysOf(a)[0]!;
          const res = assertOk(await move(cl, { rs, toCopyId: to }), `move rs ${rs} ${from} -> ${to}`);
          assert.equal(res.fromCopyId, from);
          assert.equal(res.toCopyId, to);
          assert.equal(res.epoch, a.epoch + 1, 'a move is a new epoch');
          assert.equal(res.caughtUpFirst, false, 'a caught-up standby is promoted at once');
          if (res.paused) paused++;
          assert.ok(res.pauseMs > 0 && res.pauseMs <= res.totalMs, `pause ${res.pauseMs} ms within total ${res.totalMs} ms`);
          assert.equal(activeOf(res.assignment!), to);
          assert.deepEqual(standbysOf(res.assignment!), [from], 'the old active is the standby now');
          await progressed(load, 20, `after moving rs ${rs}`);
        }
      }
      // 2. To the copy that holds nothing of the RS: make-before-break.
      for (let rs = 0; rs < RS; rs++) {
        const s = await settled(cl, 1, `rs ${rs}: standbys caught up`, true);
        const a = assignment(s, rs);
        const from = activeOf(a)!;
        const member = new Set(a.members.map((m) => m.copyId));
        const to = ['c1', 'c2', 'c3'].find((c) => !member.has(c))!;
        const res = assertOk(await move(cl, { rs, toCopyId: to }), `move rs ${rs} ${from} -> non-member ${to}`);
        assert.equal(res.fromCopyId, from);
        assert.equal(res.caughtUpFirst, true, 'the target caught up as a standby first');
        assert.equal(res.epoch, a.epoch + 1);
        assert.equal(activeOf(res.assignment!), to);
        assert.equal(standbysOf(res.assignment!).length, 1, 'the source left: back at one standby');
        assert.ok(!res.assignment!.members.some((m) => m.copyId === from && m.role !== Role.ROLE_OUT_OF_SERVICE), `${from} no longer holds rs ${rs}`);
        await progressed(load, 20, `after moving rs ${rs} to a non-member`);
      }
    } finally {
      await load.stop();
    }
    t.diagnostic(`${paused} of ${2 * RS} moves to a standby paused the old active first`);
    assert.ok(paused >= RS, `most moves paused the old active first (${paused} of ${2 * RS})`);
    await assertExact(load, 'after 12 moves under load');
    const s = await settled(cl, 1, 'settled after the moves');
    assert.deepEqual(s.moves, [], 'no move left pending');
  });

  test('per-RS order through moves via the router: replies are 1, 2, 3… for every key', async () => {
    const ks = keys(6);
    const movingRs = cl.routing.rsForKey('counter', ks[0]!);
    const ROUNDS = 150;
    const WINDOW = 20;
    const s = new Stream(routerClient);
    const results: Promise<SendResult>[][] = [];
    const inFlight: Promise<unknown>[] = [];
    const moves: Promise<void>[] = [];
    let moving: Promise<void> | undefined;
    for (let round = 0; round < ROUNDS; round++) {
      if (inFlight.length >= WINDOW) await inFlight.shift();
      const batch = s.send(ks.map((k) => inc(k, { deadlineMs: 30_000, messageId: `mig-ord-${k}-${round}` })));
      results.push(batch);
      inFlight.push(Promise.all(batch));
      if (round % 30 === 10 && !moving) {
        // Move the RS to its standby while the stream keeps going (not awaited: the stream must not idle).
        moving = (async () => {
          const a = assignment(await cl.status(true), movingRs);
          assertOk(await move(cl, { rs: movingRs, toCopyId: standbysOf(a)[0]! }), `move rs ${movingRs} mid-stream`);
        })().finally(() => (moving = undefined));
        moves.push(moving);
      }
    }
    const all = await Promise.all(results.map((b) => Promise.all(b)));
    s.end();
    await Promise.all(moves);
    assert.ok(moves.length >= 3, 'the RS moved several times mid-stream');
    for (let round = 0; round < ROUNDS; round++) {
      all[round]!.forEach((r, i) => {
        assert.equal(r.statusCode, grpc.status.OK, `round ${round} key ${ks[i]}: ${r.statusMessage}`);
        assert.equal(replyValue(r), round + 1, `round ${round} key ${ks[i]}: applied once each, in order`);
      });
    }
    for (const k of ks) assert.equal(await cl.routing.query<number>('counter', cl.routing.rsForKey('counter', k), { key: k }), ROUNDS, `counter ${k}`);
  });

  test('a pause is a lease: the RS serves again by itself when it ends; ResumeRs ends it early; bad PauseRs input is refused', async () => {
    const key = keys(1)[0]!;
    const rs = cl.routing.rsForKey('counter', key);
    const s = await cl.status(true);
    const a = assignment(s, rs);
    const copy = s.copies.find((c) => c.copyId === activeOf(a))!;
    const adsm = new AdsmServiceClient(copy.address, insecureCredentials());
    try {
      const pause = (o: { leaseMs: number; epoch?: number; incarnation?: number; app?: string }) =>
        unaryCall(adsm.pauseRs.bind(adsm), {
          copyId: copy.copyId,
          incarnation: o.incarnation ?? copy.incarnation,
          app: o.app ?? 'counter',
          rs: [{ rs, epoch: o.epoch ?? a.epoch }],
          leaseMs: o.leaseMs,
          reason: 'e2e: controller dies mid-move',
        }, { deadlineMs: 5000 });
      await cl.routing.deliver('counter', key, { key, by: 1 });
      // As if a controller paused the RS for a move and then died: nobody resumes it.
      const LEASE = 600;
      const p = await pause({ leaseMs: LEASE });
      assert.equal(p.rs[0]!.paused, true, p.rs[0]!.detail);
      assert.ok(p.rs[0]!.lastSeq >= 1, 'the answer carries the last sequence number');
      const t0 = Date.now();
      const v = await cl.routing.deliver<{ value: number }>('counter', key, { key, by: 1 }, { deadlineMs: 10_000 });
      const held = Date.now() - t0;
      assert.equal(v.reply.value, 2, 'the held increment was applied once');
      assert.ok(held >= LEASE - 150, `the increment waited for the lease (${held} ms)`);
      // ResumeRs ends a long pause early.
      assert.equal((await pause({ leaseMs: 30_000 })).rs[0]!.paused, true);
      const delivering = cl.routing.deliver<{ value: number }>('counter', key, { key, by: 1 }, { deadlineMs: 10_000 });
      const t1 = Date.now();
      const r = await unaryCall(adsm.resumeRs.bind(adsm), { copyId: copy.copyId, incarnation: copy.incarnation, app: 'counter', rs: [rs] }, { deadlineMs: 5000 });
      assert.equal(r.resumed, 1);
      assert.equal((await delivering).reply.value, 3);
      assert.ok(Date.now() - t1 < 5000, 'served right after the resume');
      // Bad input: specific statuses, nothing paused.
      await assert.rejects(pause({ leaseMs: 0 }), (e: { code?: number; message: string }) => e.code === grpc.status.INVALID_ARGUMENT && /lease_ms/.test(e.message));
      await assert.rejects(pause({ leaseMs: 100, incarnation: copy.incarnation + 1 }), (e: { code?: number }) => e.code === grpc.status.FAILED_PRECONDITION);
      await assert.rejects(pause({ leaseMs: 100, app: 'nope' }), (e: { code?: number; message: string }) => e.code === grpc.status.NOT_FOUND && /nope/.test(e.message));
      const stale = await pause({ leaseMs: 100, epoch: a.epoch + 5 });
      assert.equal(stale.rs[0]!.paused, false, 'not paused at an epoch the copy does not hold');
      assert.match(stale.rs[0]!.detail, /not ACTIVE at epoch/);
      const v4 = await cl.routing.deliver<{ value: number }>('counter', key, { key, by: 1 }, { deadlineMs: 2000 });
      assert.equal(v4.reply.value, 4, 'the RS serves normally afterwards');
    } finally {
      adsm.close();
    }
  });

  test('drain is live: every RS leaves the copy under load, counters exact', async () => {
    await settled(cl, 1, 'settled before the drain');
    const load = new CounterLoad(cl.routing, keys(12), 6);
    load.start();
    try {
      await progressed(load, 100, 'warm-up');
      const res = await cl.ctl.withLeader((c) => unaryCall(c.drainCopy.bind(c), { copyId: 'c3' }));
      assert.ok(res.movedActive > 0, 'c3 was active for some RS');
      await progressed(load, 100, 'after the drain');
    } finally {
      await load.stop();
    }
    await assertExact(load, 'drain under load');
    const s = await cl.status(true);
    assert.ok(s.assignments.every((a) => !a.members.some((m) => m.copyId === 'c3' && m.role !== Role.ROLE_OUT_OF_SERVICE)), 'c3 holds nothing');
    await cl.ctl.withLeader((c) => unaryCall(c.enableCopy.bind(c), { copyId: 'c3' }));
    // c3 gets actives back by balancing once its new standbys caught up: let that finish.
    await quiesce(cl, 1);
  });

  test('understudy move: from -> to, epoch and pause; refusals get a clear message and exit code', async () => {
    const cli = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
      let out = '';
      let err = '';
      const code = await runCli(['--controllers', cl.addresses.join(','), ...args], { out: (t) => (out += t), err: (t) => (err += t), env: {}, now: () => Date.now() });
      return { code, out, err };
    };
    const a = assignment(await quiesce(cl, 1), 1);
    const from = activeOf(a)!;
    const to = standbysOf(a)[0]!;
    const ok = await cli(['move', 'counter', '1', to, '--reason', 'e2e cli']);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, new RegExp(`^moved counter/1: ${from} -> ${to} at epoch ${a.epoch + 1} \\((paused|switched in) [0-9.]+ ms.*; total [0-9.]+ ms\\)\n$`));
    const json = await cli(['move', 'counter', '1', from, '--json']);
    assert.equal(json.code, 0, json.err);
    const j = JSON.parse(json.out) as { fromCopyId: string; toCopyId: string; epoch: number; pauseMs: number };
    assert.deepEqual([j.fromCopyId, j.toCopyId, j.epoch], [to, from, a.epoch + 2]);
    const ghost = await cli(['move', 'counter', '1', 'ghost-copy']);
    assert.equal(ghost.code, 3, 'NOT_FOUND exit code');
    assert.match(ghost.err, /^understudy: move refused: copy ghost-copy not found in app "counter" \(NOT_FOUND\)\n$/);
    const active = await cli(['move', 'counter', '1', from]);
    assert.equal(active.code, 4, 'FAILED_PRECONDITION exit code');
    assert.match(active.err, new RegExp(`^understudy: move refused: copy ${from} is already ACTIVE for counter/1 \\(FAILED_PRECONDITION\\)\n$`));
    const usage = await cli(['move', 'counter', 'one', from]);
    assert.equal(usage.code, 2);
    assert.match(usage.err, /RS must be a resource set number/);
  });

  test('invalid moves are refused with a clear status and change nothing', async () => {
    // Roles only: catching-up marks clear in the background (standbys reported caught up).
    const roles = (s: GetStatusResponse): string[] => s.assignments.map((a) => `${a.rs}@${a.epoch}:${a.members.map((m) => `${m.copyId}=${Role[m.role]}`).join(',')}`);
    const check = async (r: Partial<MoveRsRequest> & { rs: number; toCopyId: string }, code: grpc.status, re: RegExp, what: string): Promise<void> => {
      const s0 = await cl.status(true);
      assertRefused(await move(cl, r, 10_000), code, re, what);
      const s1 = await cl.status(true);
      assert.deepEqual(roles(s1), roles(s0), `${what}: no role or epoch changed`);
      assert.deepEqual(s1.moves, [], `${what}: no move pending`);
    };
    const s = await settled(cl, 1, 'settled before the refusals');
    const a0 = assignment(s, 0);
    await check({ rs: 0, toCopyId: '' }, grpc.status.INVALID_ARGUMENT, /to_copy_id/, 'empty target');
    await check({ rs: 0, toCopyId: 'c1', app: '' }, grpc.status.INVALID_ARGUMENT, /app is required/, 'empty app');
    await check({ rs: 0, toCopyId: 'c1', reason: 'x'.repeat(300) }, grpc.status.INVALID_ARGUMENT, /reason/, 'reason too long');
    await check({ rs: 0, toCopyId: 'c1', app: 'no-such-app' }, grpc.status.NOT_FOUND, /no-such-app/, 'unknown app');
    await check({ rs: RS, toCopyId: 'c1' }, grpc.status.NOT_FOUND, new RegExp(`RS ${RS}`), 'RS out of range');
    await check({ rs: 0, toCopyId: 'ghost-copy' }, grpc.status.NOT_FOUND, /ghost-copy/, 'unknown copy');
    await check({ rs: 0, toCopyId: activeOf(a0)! }, grpc.status.FAILED_PRECONDITION, new RegExp(`${activeOf(a0)}.*already ACTIVE`), 'move to the current active');

    // A failed target: c4 joins, then is killed (kill -9); the fault manager has it declared failed.
    await cl.restartCopy('c4');
    await waitFor(async () => (await cl.status()).copies.find((c) => c.copyId === 'c4')?.status === CopyStatus.COPY_STATUS_UP, { what: 'c4 up' });
    await settled(cl, 1, 'settled with c4');
    await cl.copies.get('c4')!.kill();
    await waitFor(async () => (await cl.status()).copies.find((c) => c.copyId === 'c4')?.status === CopyStatus.COPY_STATUS_OUT_OF_SERVICE, { what: 'c4 declared failed' });
    await settled(cl, 1, 'settled after c4 failed');
    await check({ rs: 0, toCopyId: 'c4' }, grpc.status.FAILED_PRECONDITION, /c4 is OUT_OF_SERVICE/, 'move to a failed copy');

    // A disabled target: c4 restarted (new incarnation, UP), then disabled by the operator.
    await cl.restartCopy('c4');
    await waitFor(async () => (await cl.status()).copies.find((c) => c.copyId === 'c4')?.status === CopyStatus.COPY_STATUS_UP, { what: 'c4 up again' });
    await cl.ctl.withLeader((c) => unaryCall(c.disableCopy.bind(c), { copyId: 'c4' }));
    await settled(cl, 1, 'settled after c4 was disabled');
    await check({ rs: 0, toCopyId: 'c4' }, grpc.status.FAILED_PRECONDITION, /c4 is DISABLED/, 'move to a disabled copy');

    // The cluster still serves every RS.
    const load = new CounterLoad(cl.routing, keys(8), 2);
    await load.burst(40);
    await assertExact(load, 'after the refusals');
  });
});

// ------------------------------------------------------- a pause stuck on a hung old active

describe('live migration: a pause stuck on a hung old active does not hold its failover', () => {
  let cl: CounterCluster;
  /** Far above anything the test allows: only an interrupted pause lets it pass. */
  const PAUSE_TIMEOUT_MS = 40_000;
  /** Detection takes 300 ms, the SetRoles to the hung copy up to 1 s; a held loop waits 2–7 s (keepalive) or 40 s. */
  const BOUND_MS = 5_000;

  before(async () => {
    cl = await startCounterCluster({
      copies: 3,
      rsCount: 4,
      standbys: 1,
      mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT,
      faultManagers: 1,
      detection: { heartbeatIntervalMs: 100, missedHeartbeats: 3 },
      controllerEnv: { UNDERSTUDY_PAUSE_TIMEOUT_MS: String(PAUSE_TIMEOUT_MS) },
    });
    await settled(cl, 1, 'cluster settled');
  });

  after(async () => {
    await cl?.stop();
  });

  test('SIGSTOP of the old active, then a move: the fault report cuts the pause short; move and failover are done within seconds, not at the pause deadline', async (t) => {
    const s0 = await settled(cl, 1, 'settled');
    const a = assignment(s0, 0);
    const from = activeOf(a)!;
    const to = standbysOf(a)[0]!;
    const started = Date.now();
    // Hung and not detected yet: the move's PauseRs to it gets no answer. Without the interrupt
    // the decision loop waits for the pause deadline (40 s) or the channel's keepalive (~7 s)
    // before the failover can even start; with it, detection (3 × 100 ms) plus a little.
    cl.copies.get(from)!.signal('SIGSTOP');
    const res = assertOk(await move(cl, { rs: 0, toCopyId: to }, PAUSE_TIMEOUT_MS + 20_000), `move rs 0 ${from} -> ${to} with ${from} hung`);
    const moveMs = Date.now() - started;
    assert.equal(res.fromCopyId, from);
    assert.equal(res.toCopyId, to);
    assert.equal(res.paused, false, 'the hung copy never paused');
    assert.match(res.pauseDetail, /^interrupted: a fault report is waiting/, 'the pause was cut short by the fault report (not by its deadline or the keepalive)');
    await waitFor(
      async () => {
        const s = await cl.status(true);
        const gone = s.copies.find((c) => c.copyId === from)?.status !== CopyStatus.COPY_STATUS_UP;
        return gone && s.assignments.every((x) => activeOf(x) !== undefined && activeOf(x) !== from);
      },
      { what: `${from} failed over`, timeoutMs: 30_000 },
    );
    const failoverMs = Date.now() - started;
    t.diagnostic(`move answered after ${moveMs} ms, ${from} failed over after ${failoverMs} ms`);
    assert.ok(moveMs < BOUND_MS, `the move answered after ${moveMs} ms: its pause was not cut short by the fault report`);
    assert.ok(failoverMs < BOUND_MS, `${from} failed over after ${failoverMs} ms: the failover waited behind the move's pause`);
  });
});

// -------------------------------------------------------------------------------- DISTRIBUTED

describe('live migration, DISTRIBUTED (3 copies, checkpoint before ack)', () => {
  let cl: CounterCluster;
  const RS = 6;

  before(async () => {
    cl = await startCounterCluster({ copies: 3, rsCount: RS, mode: Mode.MODE_DISTRIBUTED, faultManagers: 1, copyEnv: { UNDERSTUDY_CHECKPOINT_BEFORE_ACK: '1' } });
  });

  after(async () => {
    await cl?.stop();
  });

  test('moves under load restore from the final checkpoint: counters exact', async (t) => {
    const load = new CounterLoad(cl.routing, keys(18), 6);
    let paused = 0;
    load.start();
    try {
      await progressed(load, 100, 'warm-up');
      for (let round = 0; round < 2; round++) {
        for (let rs = 0; rs < RS; rs++) {
          const a = assignment(await cl.status(true), rs);
          const from = activeOf(a)!;
          const to = ['c1', 'c2', 'c3'][(Number(from.slice(1)) + round) % 3]!;
          const res = assertOk(await move(cl, { rs, toCopyId: to }), `move rs ${rs} ${from} -> ${to}`);
          assert.equal(res.fromCopyId, from);
          assert.equal(res.epoch, a.epoch + 1);
          if (res.paused) paused++;
          assert.equal(activeOf(res.assignment!), to);
          assert.deepEqual(standbysOf(res.assignment!), [], 'DISTRIBUTED: no standby');
          await progressed(load, 20, `after moving rs ${rs}`);
        }
      }
    } finally {
      await load.stop();
    }
    t.diagnostic(`${paused} of ${2 * RS} moves paused the old active (final checkpoint) first`);
    assert.ok(paused >= RS, `most moves paused the old active and had it write a final checkpoint (${paused} of ${2 * RS})`);
    await assertExact(load, 'after 12 DISTRIBUTED moves under load');
  });

  test('a move to the RS\'s own active is refused; nothing changes', async () => {
    const s0 = await cl.status(true);
    const a = assignment(s0, 0);
    assertRefused(await move(cl, { rs: 0, toCopyId: activeOf(a)! }, 10_000), grpc.status.FAILED_PRECONDITION, /already ACTIVE/, 'move to the active');
    const s1 = await cl.status(true);
    assert.deepEqual(s1.assignments, s0.assignments);
  });
});

// ----------------------------------------------------------------------------- FAULT_TOLERANT

describe('live migration, FAULT_TOLERANT (2 copies)', () => {
  let cl: CounterCluster;

  before(async () => {
    cl = await startCounterCluster({ copies: 2, rsCount: 2, standbys: 1, mode: Mode.MODE_FAULT_TOLERANT });
  });

  after(async () => {
    await cl?.stop();
  });

  test('a per-RS move is refused: all RS share one active (use switchover)', async () => {
    const s0 = await cl.status(true);
    const a = assignment(s0, 0);
    assertRefused(await move(cl, { rs: 0, toCopyId: standbysOf(a)[0]! }, 10_000), grpc.status.FAILED_PRECONDITION, /FAULT_TOLERANT.*switchover/, 'move in an FT app');
    const s1 = await cl.status(true);
    assert.equal(s1.stateVersion, s0.stateVersion);
    assert.deepEqual(s1.assignments, s0.assignments);
  });
});
