/**
 * End to end: a controller (or two) and three counter copies as real processes on 127.0.0.1,
 * with the embedded store and with a real redis-server.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CopyStatus, Role, type GetStatusResponse, type RsAssignment } from '@understudy/proto';
import { unaryCall } from '@understudy/runtime';
import { CounterLoad, keys, startCounterCluster, type CounterCluster } from '../harness/cluster';
import { startRedis } from '../harness/redis';
import { waitFor } from '../harness/wait';

const RS = 8;

function activeOf(a: RsAssignment): string | undefined {
  return a.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId;
}
function standbysOf(a: RsAssignment): string[] {
  return a.members.filter((m) => m.role === Role.ROLE_STANDBY).map((m) => m.copyId);
}
function placement(s: GetStatusResponse): string {
  return JSON.stringify(s.assignments.map((a) => [a.rs, a.epoch, a.members.map((m) => `${m.copyId}:${m.role}`)]));
}

/** Wait until balancing has finished: active counts of UP copies within 1 of each other. */
async function balancedStatus(cl: CounterCluster): Promise<GetStatusResponse> {
  return waitFor(async () => {
    const s = await cl.status(true);
    const actives = s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).map((c) => c.activeCount);
    return !s.passive && Math.max(...actives) - Math.min(...actives) <= 1 && s;
  }, { what: 'balanced placement' });
}

async function assertCountsExact(load: CounterLoad): Promise<void> {
  assert.deepEqual(load.failures, [], 'every increment must be acknowledged (same id retried)');
  const values = await load.values();
  for (const [key, n] of load.acked) assert.equal(values.get(key), n, `counter ${key}: value must equal acknowledged increments`);
}

describe('controller + 3 counter copies, embedded store', () => {
  let cl: CounterCluster;
  before(async () => {
    cl = await startCounterCluster({ rsCount: RS });
  });
  after(async () => {
    await cl?.stop();
  });

  test('status: every RS has 1 active + 1 standby on different copies, balanced', async () => {
    const s = await cl.status(true);
    assert.equal(s.assignments.length, RS);
    for (const a of s.assignments) {
      const act = activeOf(a);
      const sb = standbysOf(a);
      assert.ok(act, `rs ${a.rs} has an active`);
      assert.equal(sb.length, 1, `rs ${a.rs} has one standby`);
      assert.notEqual(sb[0], act, `rs ${a.rs}: standby not on the active's copy`);
      assert.ok(a.epoch >= 1);
    }
    const actives = s.copies.map((c) => c.activeCount);
    assert.ok(Math.max(...actives) - Math.min(...actives) <= 1, `actives balanced: ${actives}`);
  });

  test('switchover under load moves the active and loses no acknowledged increment', async () => {
    const load = new CounterLoad(cl.routing, keys(24));
    load.start();
    await waitFor(() => load.count >= 50, { what: 'load running' });
    const before = await cl.status(true);
    for (const a of before.assignments.slice(0, 4)) {
      const to = standbysOf(a)[0]!;
      const res = await cl.ctl.withLeader((c) => unaryCall(c.switchover.bind(c), { app: 'counter', rs: a.rs, toCopyId: to }));
      assert.equal(activeOf(res.assignment!), to, `rs ${a.rs} active moved to ${to}`);
      assert.ok(res.assignment!.epoch > a.epoch, 'switchover takes a new epoch');
      // Live handoff: the old active paused the RS (finished and replicated its batch) first.
      assert.equal(res.paused, true, `rs ${a.rs}: the old active was paused before the switch`);
      assert.ok(res.pauseMs > 0 && res.pauseMs < 10_000, `pause_ms ${res.pauseMs}`);
      const n = load.count;
      await waitFor(() => load.count >= n + 20, { what: 'load continues after switchover' });
    }
    await load.stop();
    await assertCountsExact(load);
  });

  test('drain empties a copy and keeps every RS served', async () => {
    const load = new CounterLoad(cl.routing, keys(16));
    load.start();
    const res = await cl.ctl.withLeader((c) => unaryCall(c.drainCopy.bind(c), { copyId: 'c3' }));
    assert.ok(res.movedActive + res.movedStandby > 0, 'c3 held something before the drain');
    const s = await cl.status(true);
    for (const a of s.assignments) {
      assert.ok(!a.members.some((m) => m.copyId === 'c3' && (m.role === Role.ROLE_ACTIVE || m.role === Role.ROLE_STANDBY)), `rs ${a.rs} off c3`);
      assert.ok(activeOf(a), `rs ${a.rs} still has an active`);
    }
    const c3 = s.copies.find((c) => c.copyId === 'c3')!;
    assert.equal(c3.activeCount + c3.standbyCount, 0);
    const n = load.count;
    await waitFor(() => load.count >= n + 30, { what: 'load continues after drain' });
    await load.stop();
    await assertCountsExact(load);
    await cl.ctl.withLeader((c) => unaryCall(c.enableCopy.bind(c), { copyId: 'c3' }));
    await waitFor(async () => {
      const st = await cl.status();
      const c = st.copies.find((x) => x.copyId === 'c3')!;
      return c.activeCount + c.standbyCount > 0;
    }, { what: 'enabled c3 gets work back' });
    const balanced = await balancedStatus(cl);
    // Balancing only promotes caught-up standbys: c3's actives prove the actives reported its
    // new standbys caught up (ReportSynced), and no mark is left once they all have.
    assert.ok(balanced.copies.find((x) => x.copyId === 'c3')!.activeCount > 0, 'c3 gets actives back once its standbys caught up');
    await waitFor(async () => (await cl.status(true)).assignments.every((a) => a.members.every((m) => !m.catchingUp)), { what: 'every standby reported caught up' });
  });

  test('kill -9 of the controller and restart keeps all assignments; copies serve meanwhile', async () => {
    const before = await balancedStatus(cl);
    await cl.controllers[0]!.kill();
    // No controller: the data plane keeps working on the last routing table.
    const load = new CounterLoad(cl.routing, keys(12));
    await load.burst(60);
    await cl.restartController(0);
    const after = await waitFor(async () => {
      const s = await cl.status(true);
      return !s.passive && s;
    }, { what: 'restarted controller active' });
    assert.equal(placement(after), placement(before), 'assignments survive a controller crash');
    await load.burst(30);
    await assertCountsExact(load);
  });
});

describe('two controllers on Redis', () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let cl: CounterCluster;
  const LEASE_MS = 1500;
  before(async () => {
    redis = await startRedis();
    cl = await startCounterCluster({ rsCount: RS, redisUrl: redis.url, controllers: 2, leaseTtlMs: LEASE_MS });
  });
  after(async () => {
    await cl?.stop();
    await redis?.stop();
  });

  test('a follower names the leader', async () => {
    const s = await cl.status();
    const follower = cl.addresses.find((a) => a !== s.leaderAddress)!;
    const c = cl.ctl.clientFor(follower);
    await assert.rejects(unaryCall(c.getStatus.bind(c), { app: '', includeAssignments: false }), (e: Error & { metadata?: Record<string, string> }) => {
      assert.match(e.message, /not the leader/);
      assert.equal(e.metadata?.['understudy-leader-address'], s.leaderAddress);
      return true;
    });
  });

  test('kill -9 of the leader: the other leads within the lease time, ops keep working, nothing lost', async () => {
    const load = new CounterLoad(cl.routing, keys(16));
    load.start();
    const before = await cl.status(true);
    const leaderIdx = cl.addresses.indexOf(before.leaderAddress);
    assert.ok(leaderIdx >= 0);
    const killedAt = Date.now();
    await cl.controllers[leaderIdx]!.kill();
    const other = cl.addresses[1 - leaderIdx]!;
    const c = cl.ctl.clientFor(other);
    const s = await waitFor(async () => {
      const st = await unaryCall(c.getStatus.bind(c), { app: '', includeAssignments: true }, { deadlineMs: 1000 });
      return st.leaderAddress === other && st;
    }, { what: 'new leader', timeoutMs: 10_000 });
    const tookMs = Date.now() - killedAt;
    // Lease expiry plus one acquisition round (ttl/3) plus process scheduling slack.
    assert.ok(tookMs < LEASE_MS * 2 + 1000, `took ${tookMs} ms to elect a new leader (lease ${LEASE_MS} ms)`);
    assert.equal(placement(s), placement(before), 'the new leader has the same assignments');
    await waitFor(async () => !(await cl.status()).passive, { what: 'new leader leaves the passive phase' });
    const a = s.assignments[0]!;
    const res = await cl.ctl.withLeader((cc) => unaryCall(cc.switchover.bind(cc), { app: 'counter', rs: a.rs, toCopyId: standbysOf(a)[0]! }));
    assert.equal(activeOf(res.assignment!), standbysOf(a)[0]);
    const n = load.count;
    await waitFor(() => load.count >= n + 30, { what: 'load continues' });
    await load.stop();
    await assertCountsExact(load);
  });

  test('kill -9 of every controller and restart on Redis keeps assignments', async () => {
    const before = await balancedStatus(cl);
    await Promise.all(cl.controllers.map((p) => p?.kill()));
    const load = new CounterLoad(cl.routing, keys(8));
    await load.burst(40);
    await cl.restartController(0);
    const after = await waitFor(async () => {
      const s = await cl.status(true);
      return !s.passive && s;
    }, { what: 'restarted controller active' });
    assert.equal(placement(after), placement(before));
    await assertCountsExact(load);
  });
});
