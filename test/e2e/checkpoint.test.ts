/**
 * Checkpoints in DISTRIBUTED mode (no standbys) end to end (R-CKP-1, R-HM-5, R-NF-1): a
 * controller, two fault managers and three counter copies as real processes, the copies
 * checkpointing every RS before they acknowledge. A failed copy's RS move to the survivors,
 * which fence the checkpoint at the new epoch and restore from it (state + message-id dedupe
 * table), so the counters equal the acknowledged increments exactly — nothing acknowledged
 * lost, nothing applied twice. A deposed active (SIGSTOP, then SIGCONT) can no longer write a
 * checkpoint (refused at its stale epoch) and commits nothing.
 *
 * Runs with the embedded store (checkpoints through the controller into its data dir) and with
 * Redis (copies write their checkpoints to it directly).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CopyStatus, Mode, Role, type GetStatusResponse } from '@understudy/proto';
import { FENCED_EXIT_CODE, decodeCheckpoint, encodeCheckpoint } from '@understudy/adsm';
import { StaleEpochError, unaryCall } from '@understudy/runtime';
import { CounterLoad, keys, startCounterCluster, type CounterCluster } from '../harness/cluster';
import { startRedis, type RedisHandle } from '../harness/redis';
import { waitFor } from '../harness/wait';

const RS = 8;
/** 100 ms heartbeats, hang after 3 missed. */
const DETECTION = { heartbeatIntervalMs: 100, missedHeartbeats: 3 };

/**
 * Copy settings. The cluster harness starts copies with the test process's environment, so the
 * checkpoint settings travel as env vars (the flags of `startCounterCopy` do the same).
 */
function copyEnv(redisUrl: string | undefined, beforeAck = true): () => void {
  const names = ['UNDERSTUDY_CHECKPOINT_BEFORE_ACK', 'UNDERSTUDY_CHECKPOINT_INTERVAL_MS', 'UNDERSTUDY_CHECKPOINT_REDIS_URL', 'REDIS_URL'] as const;
  const saved = names.map((n) => [n, process.env[n]] as const);
  process.env.UNDERSTUDY_CHECKPOINT_BEFORE_ACK = String(beforeAck);
  process.env.UNDERSTUDY_CHECKPOINT_INTERVAL_MS = '500';
  process.env.UNDERSTUDY_CHECKPOINT_REDIS_URL = redisUrl ?? '';
  // Embedded: checkpoints go through the controller, whatever the caller's environment says.
  delete process.env.REDIS_URL;
  return () => {
    for (const [n, v] of saved) {
      if (v === undefined) delete process.env[n];
      else process.env[n] = v;
    }
  };
}

function copy(s: GetStatusResponse, id: string) {
  return s.copies.find((c) => c.copyId === id);
}

/** Every RS has an ACTIVE on an UP copy, the copies `gone` are OUT_OF_SERVICE and hold no role. */
async function recovered(cl: CounterCluster, gone: readonly string[]): Promise<GetStatusResponse> {
  return waitFor(
    async () => {
      const s = await cl.status(true);
      const up = new Set(s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).map((c) => c.copyId));
      for (const id of gone) if (copy(s, id)?.status !== CopyStatus.COPY_STATUS_OUT_OF_SERVICE) return false;
      for (const a of s.assignments) {
        const act = a.members.find((m) => m.role === Role.ROLE_ACTIVE);
        if (!act || !up.has(act.copyId)) return false;
        if (a.members.some((m) => gone.includes(m.copyId) && m.role !== Role.ROLE_OUT_OF_SERVICE)) return false;
      }
      return s;
    },
    { what: `every RS recovered off ${gone.join(',')}`, timeoutMs: 20_000 },
  );
}

/** The UP copy with the most ACTIVE roles, and the RS (with epochs) it holds. */
async function busiest(cl: CounterCluster): Promise<{ id: string; rs: Map<number, number> }> {
  const s = await cl.status(true);
  const up = s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).sort((a, b) => b.activeCount - a.activeCount);
  assert.ok(up[0] && up[0].activeCount > 0, 'some copy holds actives');
  const id = up[0].copyId;
  const rs = new Map<number, number>();
  for (const a of s.assignments) if (a.members[0]?.copyId === id && a.members[0].role === Role.ROLE_ACTIVE) rs.set(a.rs, a.epoch);
  return { id, rs };
}

/** Restart `id` and wait until it is UP and every RS has an active on an UP copy again. */
async function rejoin(cl: CounterCluster, id: string): Promise<void> {
  await cl.restartCopy(id);
  await waitFor(
    async () => {
      const s = await cl.status(true);
      if (copy(s, id)?.status !== CopyStatus.COPY_STATUS_UP) return false;
      const app = s.apps.find((a) => a.spec?.name === 'counter');
      return app?.rsWithActive === RS && s.copies.every((c) => c.status === CopyStatus.COPY_STATUS_UP);
    },
    { what: `${id} rejoined`, timeoutMs: 30_000 },
  );
}

async function assertExact(load: CounterLoad): Promise<void> {
  assert.deepEqual(load.failures, [], 'every increment must be acknowledged (same id retried)');
  const values = await load.values();
  for (const [key, n] of load.acked) assert.equal(values.get(key), n, `counter ${key}: value must equal acknowledged increments`);
}

/** Run `scenario` under load: load starts, the fault hits, load must continue, counts exact. */
async function underLoad(cl: CounterCluster, scenario: (load: CounterLoad) => Promise<void>): Promise<CounterLoad> {
  const load = new CounterLoad(cl.routing, keys(24));
  load.start();
  try {
    await waitFor(() => load.count >= 60, { what: 'load running' });
    await scenario(load);
    const n = load.count;
    await waitFor(() => load.count >= n + 30, { what: 'load continues after recovery', timeoutMs: 20_000 });
  } finally {
    await load.stop();
  }
  await assertExact(load);
  return load;
}

/**
 * Wait until the checkpoint of `rs` is fenced above `epoch`, i.e. the RS's new active took it
 * over. The probe is a fence at the old epoch: refused once the new active fenced; before that a
 * no-op (the stored epoch is already `epoch`, or it is raised to `epoch` below the new active's).
 */
async function fencedAbove(cl: CounterCluster, rs: number, epoch: number): Promise<void> {
  await waitFor(
    async () => {
      try {
        await cl.ctl.withLeader((c) => unaryCall(c.fenceCheckpoint.bind(c), { app: 'counter', rs, epoch }, { deadlineMs: 3000 }));
        return false;
      } catch (e) {
        if (e instanceof StaleEpochError) return true;
        throw e;
      }
    },
    { what: `the new active of rs ${rs} fenced its checkpoint above epoch ${epoch}`, timeoutMs: 15_000 },
  );
}

/** A checkpoint write at `epoch` through the controller (what a deposed active would send). */
async function saveAt(cl: CounterCluster, rs: number, epoch: number): Promise<Error | undefined> {
  const bytes = encodeCheckpoint({ epoch, seq: 0, state: Buffer.from('{}'), dedupe: [] });
  try {
    await cl.ctl.withLeader((c) => unaryCall(c.saveCheckpoint.bind(c), { app: 'counter', rs, epoch, checkpoint: bytes }, { deadlineMs: 3000 }));
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

test('checkpoint encoding round-trips state, seq and the dedupe table; garbage is refused', () => {
  const c = { epoch: 7, seq: 42, state: Buffer.from('{"a":1}'), dedupe: [['m-1', Buffer.from('{"v":1}')], ['m-ü', Buffer.alloc(0)]] as [string, Buffer][] };
  assert.deepEqual(decodeCheckpoint(encodeCheckpoint(c)), c);
  assert.throws(() => decodeCheckpoint(Buffer.from('not a checkpoint')), /bad magic/);
  assert.throws(() => decodeCheckpoint(encodeCheckpoint(c).subarray(0, 30)), /truncated/);
});

for (const storeKind of ['embedded', 'redis'] as const) {
  describe(`DISTRIBUTED with checkpoint-before-ack (${storeKind} store)`, () => {
    let cl: CounterCluster;
    let redis: RedisHandle | undefined;
    let restoreEnv: () => void = () => undefined;
    before(async () => {
      if (storeKind === 'redis') redis = await startRedis();
      restoreEnv = copyEnv(redis?.url);
      cl = await startCounterCluster({ rsCount: RS, copies: 3, mode: Mode.MODE_DISTRIBUTED, faultManagers: 2, detection: DETECTION, redisUrl: redis?.url });
    });
    after(async () => {
      await cl?.stop();
      await redis?.stop();
      restoreEnv();
    });

    test('kill -9 of the busiest copy under load: survivors restore its RS from the checkpoint, counts exact', async () => {
      let victim = '';
      let moved = new Map<number, number>();
      await underLoad(cl, async () => {
        ({ id: victim, rs: moved } = await busiest(cl));
        await cl.copies.get(victim)!.kill();
        const s = await recovered(cl, [victim]);
        for (const [rs, epoch] of moved) {
          const a = s.assignments.find((x) => x.rs === rs)!;
          assert.ok(a.epoch > epoch, `rs ${rs} re-activated at a new epoch`);
          assert.notEqual(a.members[0]?.copyId, victim);
        }
      });
      // The survivors fenced the moved RS' checkpoints: the dead copy's epoch is refused now.
      for (const [rs, epoch] of moved) {
        await fencedAbove(cl, rs, epoch);
        const err = await saveAt(cl, rs, epoch);
        assert.ok(err instanceof StaleEpochError, `rs ${rs}: a checkpoint at the old epoch ${epoch} must be refused, got ${String(err)}`);
      }
      await rejoin(cl, victim);
    });

    test('SIGSTOP of an active: fenced, its checkpoints are refused; after SIGCONT it commits nothing and exits', async (t) => {
      let victim = '';
      await underLoad(cl, async () => {
        const b = await busiest(cl);
        victim = b.id;
        const p = cl.copies.get(victim)!;
        p.signal('SIGSTOP');
        try {
          await recovered(cl, [victim]);
          // The new actives fenced the checkpoints: whatever the stopped process still sends at
          // its old epochs is refused, so it can acknowledge nothing (checked: counts exact).
          for (const [rs, epoch] of b.rs) {
            await fencedAbove(cl, rs, epoch);
            const err = await saveAt(cl, rs, epoch);
            assert.ok(err instanceof StaleEpochError, `rs ${rs}: a checkpoint at the deposed epoch ${epoch} must be refused, got ${String(err)}`);
          }
        } finally {
          p.signal('SIGCONT');
        }
        const exit = await waitFor(() => Promise.race([p.exited, new Promise<false>((r) => setTimeout(() => r(false), 200))]), {
          what: `${victim} exits after SIGCONT (fenced)`,
          timeoutMs: 15_000,
        });
        assert.equal(exit.code, FENCED_EXIT_CODE, `fenced copy exits with ${FENCED_EXIT_CODE}`);
        t.diagnostic(`${victim} after SIGCONT: ${/deposed: the checkpoint is fenced/.test(p.output()) ? 'a checkpoint write was refused (deposed)' : 'fenced before it wrote a checkpoint'}`);
      });
      await rejoin(cl, victim);
    });
  });
}

describe('DISTRIBUTED with periodic checkpoints only (embedded store)', () => {
  let cl: CounterCluster;
  let restoreEnv: () => void = () => undefined;
  before(async () => {
    restoreEnv = copyEnv(undefined, false);
    cl = await startCounterCluster({ rsCount: RS, copies: 3, mode: Mode.MODE_DISTRIBUTED, faultManagers: 2, detection: DETECTION });
  });
  after(async () => {
    await cl?.stop();
    restoreEnv();
  });

  test('every RS is checkpointed within the interval (state, seq, dedupe table); a kill -9 after that loses nothing', async () => {
    const load = new CounterLoad(cl.routing, keys(24));
    await load.burst(240);
    // Expected per RS: one update (seq) and one dedupe entry per acknowledged increment.
    const perRs = new Map<number, number>();
    for (const [key, n] of load.acked) {
      const rs = cl.routing.rsForKey('counter', key);
      perRs.set(rs, (perRs.get(rs) ?? 0) + n);
    }
    const s = await cl.status(true);
    for (const [rs, seq] of perRs) {
      const epoch = s.assignments.find((a) => a.rs === rs)!.epoch;
      // A fence at the RS's current epoch changes nothing and returns the stored checkpoint.
      await waitFor(
        async () => {
          const res = await cl.ctl.withLeader((c) => unaryCall(c.fenceCheckpoint.bind(c), { app: 'counter', rs, epoch }, { deadlineMs: 3000 }));
          if (!res.found) return false;
          const c = decodeCheckpoint(res.checkpoint);
          return c.seq === seq && c.dedupe.length === seq && c.epoch === epoch;
        },
        { what: `rs ${rs} checkpointed at seq ${seq} with ${seq} dedupe entries`, timeoutMs: 10_000 },
      );
    }
    const { id: victim } = await busiest(cl);
    await cl.copies.get(victim)!.kill();
    await recovered(cl, [victim]);
    await assertExact(load);
  });
});
