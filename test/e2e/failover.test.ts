/**
 * Automatic failover end to end (issue 3): a controller, two fault managers and counter copies as
 * real processes on 127.0.0.1; faults injected for real (kill -9, SIGSTOP/SIGCONT, event-loop
 * stalls, a fault manager killed, a whole "host" killed) under a load that records every
 * acknowledged increment. After every scenario the counters must equal the acknowledged
 * increments exactly: nothing acknowledged lost, nothing applied twice.
 *
 * Each scenario runs CHAOS_REPS times (default 20: this file is the chaos suite; set CHAOS_REPS=1 for a quick run).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CopyStatus, FaultManagerServiceClient, Mode, Role, type GetStatusResponse } from '@understudy/proto';
import { FENCED_EXIT_CODE } from '@understudy/adsm';
import { insecureCredentials, unaryCall } from '@understudy/runtime';
import { CounterLoad, keys, startCounterCluster, type CounterCluster } from '../harness/cluster';
import { waitFor } from '../harness/wait';

const REPS = Number(process.env.CHAOS_REPS ?? 20);
const RS = 8;
/** 100 ms heartbeats, hang after 3 missed; event-loop lag over 60 ms for 3 samples = unhealthy. */
const DETECTION = { heartbeatIntervalMs: 100, missedHeartbeats: 3, maxEventLoopLagMs: 60, breachSamples: 3 };

function copy(s: GetStatusResponse, id: string) {
  return s.copies.find((c) => c.copyId === id);
}

/** Every RS has an ACTIVE on an UP copy and the copy `gone` holds no ACTIVE/STANDBY role. */
async function recovered(cl: CounterCluster, gone: readonly string[]): Promise<GetStatusResponse> {
  return withStatusOnFailure(cl, () => waitFor(
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
  ));
}

/** The copy with the most ACTIVE roles. */
async function busiest(cl: CounterCluster): Promise<string> {
  const s = await cl.status();
  const up = s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).sort((a, b) => b.activeCount - a.activeCount);
  assert.ok(up[0] && up[0].activeCount > 0, 'some copy holds actives');
  return up[0].copyId;
}

/** Restart `id` and wait until it is UP again and every RS is fully replicated. */
async function rejoin(cl: CounterCluster, id: string, standbys: number): Promise<void> {
  await cl.restartCopy(id);
  await withStatusOnFailure(cl, () => waitFor(
    async () => {
      const s = await cl.status(true);
      if (copy(s, id)?.status !== CopyStatus.COPY_STATUS_UP) return false;
      return s.assignments.every((a) => a.members.filter((m) => m.role === Role.ROLE_STANDBY).length === standbys);
    },
    { what: `${id} rejoined and every RS has ${standbys} standby(s)`, timeoutMs: 30_000 },
  ));
}

/** On failure, add the cluster's view (copies, assignments, recent controller warnings) to the error. */
async function withStatusOnFailure<T>(cl: CounterCluster, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    const s = await cl.status(true).catch(() => undefined);
    const copies = s?.copies.map((c) => `${c.copyId}:${CopyStatus[c.status]}:a${c.activeCount}/s${c.standbyCount}:inc${c.incarnation}`).join(' ');
    const rs = s?.assignments.map((a) => `${a.rs}@e${a.epoch}v${a.version}[${a.members.map((m) => `${m.copyId}:${Role[m.role]}${m.catchingUp ? '(catching up)' : ''}`).join(',')}]`).join(' ');
    const log = [cl.controllers[0], ...cl.faultManagers]
      .map((p) => `${p?.name}:\n${p?.output().split('\n').filter((l) => l.includes('"level":"warn"') || l.includes('"level":"error"') || /standby move|balanced/.test(l)).slice(-12).join('\n')}`)
      .join('\n');
    throw new Error(`${(e as Error).message}\ncopies: ${copies}\nassignments: ${rs}\ncontroller log tail:\n${log}`);
  }
}

async function assertExact(load: CounterLoad): Promise<void> {
  assert.deepEqual(load.failures, [], 'every increment must be acknowledged (same id retried)');
  const values = await load.values();
  for (const [key, n] of load.acked) assert.equal(values.get(key), n, `counter ${key}: value must equal acknowledged increments`);
}

/** Run `scenario` under load: load starts, the fault hits, load must continue, counts exact. */
async function underLoad(cl: CounterCluster, scenario: (load: CounterLoad) => Promise<void>): Promise<void> {
  const load = new CounterLoad(cl.routing, keys(24));
  load.start();
  try {
    await waitFor(() => load.count >= 30, { what: 'load running' });
    // Start every scenario from full redundancy: no standby still catching up (a restarted copy
    // from the previous round, or a standby balancing just moved). A fault inside that window is
    // a double fault for RS with one standby: balancing's standby moves are still
    // break-before-make (the old standby leaves when the new one is added), so an active killed
    // before its new standby caught up loses acknowledged updates (see the issue 3 note).
    await withStatusOnFailure(cl, () => waitFor(
      async () => (await cl.status(true)).assignments.every((a) => a.members.every((m) => !m.catchingUp)),
      { what: 'every standby caught up before the fault', timeoutMs: 30_000 },
    ));
    await scenario(load);
    const n = load.count;
    await waitFor(() => load.count >= n + 30, { what: 'load continues after recovery', timeoutMs: 20_000 });
  } finally {
    await load.stop();
  }
  try {
    await assertExact(load);
  } catch (e) {
    // What the controller decided around the loss (promotions of standbys still catching up,
    // RS reassigned without a standby) and the copies' warnings.
    const notes = cl.controllers[0]!.output().split('\n').filter((l) => /catching up|balanced|fault|promot|restor/.test(l)).slice(-40);
    throw new Error(`${(e as Error).message}\ncontroller notes:\n${notes.join('\n')}`);
  }
}

for (const mode of [Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, Mode.MODE_FAULT_TOLERANT, Mode.MODE_DISTRIBUTED]) {
  const name = Mode[mode]!.replace('MODE_', '');
  // DISTRIBUTED: no standby; recovery restores from checkpoints written before each ack.
  const standbys = mode === Mode.MODE_DISTRIBUTED ? 0 : 1;
  describe(`automatic failover, ${name}`, () => {
    let cl: CounterCluster;
    before(async () => {
      cl = await startCounterCluster({
        rsCount: RS,
        copies: 3,
        standbys,
        mode,
        faultManagers: 2,
        detection: DETECTION,
        copyEnv: mode === Mode.MODE_DISTRIBUTED ? { UNDERSTUDY_CHECKPOINT_BEFORE_ACK: 'true', UNDERSTUDY_CHECKPOINT_REDIS_URL: '', REDIS_URL: '' } : {},
      });
    });
    after(async () => {
      await cl?.stop();
    });

    test(`kill -9 of the busiest copy under load: standbys take over, nothing lost (x${REPS})`, async () => {
      for (let i = 0; i < REPS; i++) {
        await underLoad(cl, async () => {
          const victim = await busiest(cl);
          await cl.copies.get(victim)!.kill();
          await recovered(cl, [victim]);
        });
        const victim = (await cl.status()).copies.find((c) => c.status === CopyStatus.COPY_STATUS_OUT_OF_SERVICE)!.copyId;
        await rejoin(cl, victim, standbys);
      }
    });

    test(`SIGSTOP of the busiest copy: hang detected, fenced; after SIGCONT it commits nothing and exits (x${REPS})`, async () => {
      for (let i = 0; i < REPS; i++) {
        let victim = '';
        await underLoad(cl, async () => {
          victim = await busiest(cl);
          const p = cl.copies.get(victim)!;
          p.signal('SIGSTOP');
          try {
            await recovered(cl, [victim]);
          } finally {
            p.signal('SIGCONT');
          }
          const exit = await waitFor(() => Promise.race([p.exited, new Promise<false>((r) => setTimeout(() => r(false), 200))]), {
            what: `${victim} exits after SIGCONT (fenced)`,
            timeoutMs: 15_000,
          });
          assert.equal(exit.code, FENCED_EXIT_CODE, `fenced copy exits with ${FENCED_EXIT_CODE}`);
        });
        await rejoin(cl, victim, standbys);
      }
    });

    test(`event-loop stall over the threshold: unhealthy, failed over (x${REPS})`, async () => {
      for (let i = 0; i < REPS; i++) {
        let victim = '';
        await underLoad(cl, async () => {
          victim = await busiest(cl);
          // The copy stalls its event loop ~80 ms every 100 ms (fault injection, see process.ts).
          cl.copies.get(victim)!.signal('SIGUSR2');
          await recovered(cl, [victim]);
        });
        await cl.copies.get(victim)!.kill();
        await rejoin(cl, victim, standbys);
      }
    });

    test(`kill -9 of a fault manager: copies re-attach and detection keeps working (x${REPS})`, async () => {
      for (let i = 0; i < REPS; i++) {
        const fm = i % 2;
        await cl.faultManagers[fm]!.kill();
        const other = cl.faultManagerAddresses[1 - fm]!;
        let watched = '';
        await waitFor(
          async () => {
            // Every registered process (copy id + incarnation) is watched by the survivor.
            const live = (await cl.status()).copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).map((c) => `${c.copyId}@${c.incarnation}`);
            const c = new FaultManagerServiceClient(other, insecureCredentials());
            try {
              const res = await unaryCall(c.listWatched.bind(c), {}, { deadlineMs: 2000 });
              const have = new Set(res.copies.map((w) => `${w.copyId}@${w.incarnation}`));
              watched = `live ${live.join(',')}; watched ${[...have].join(',')}`;
              return live.length === 3 && live.every((x) => have.has(x));
            } finally {
              c.close();
            }
          },
          { what: `every copy attached to the surviving fault manager ${other}` },
        ).catch((e: Error) => {
          throw new Error(`${e.message}: ${watched}`);
        });
        let victim = '';
        await underLoad(cl, async () => {
          victim = await busiest(cl);
          await cl.copies.get(victim)!.kill();
          await recovered(cl, [victim]);
        });
        await cl.restartFaultManager(fm);
        await rejoin(cl, victim, standbys);
      }
    });
  });
}

describe('host fault', () => {
  let cl: CounterCluster;
  before(async () => {
    // c1, c2 on host-a; c3, c4 on their own hosts.
    cl = await startCounterCluster({
      rsCount: RS,
      copies: 4,
      standbys: 1,
      faultManagers: 2,
      detection: DETECTION,
      hostOf: (id) => (id === 'c1' || id === 'c2' ? 'host-a' : `host-${id}`),
    });
  });
  after(async () => {
    await cl?.stop();
  });

  // Balancing used to leave an RS's active and its only standby on host-a now and then (a
  // fallback move to a same-host copy), and the host fault then took both: acknowledged
  // increments lost. Balancing now never makes an RS's host spread worse when the spread can be
  // had, and re-spreads RS that lost it (reconcile.ts, Phase H); the check before each kill
  // asserts it.
  test(`every copy of one host killed: host fault reported, every RS recovered (x${REPS})`, async () => {
    for (let i = 0; i < REPS; i++) {
      await underLoad(cl, async () => {
        // Host spread: every RS keeps a member that holds its state (not catching up) off
        // host-a, or the host fault takes the whole state. (A standby move between the two
        // host-a copies may be under way: the RS then lists both, next to its member elsewhere.)
        const before = await cl.status(true);
        const onlyHostA = before.assignments.filter(
          (a) => !a.members.some((m) => m.copyId !== 'c1' && m.copyId !== 'c2' && m.role !== Role.ROLE_OUT_OF_SERVICE && !m.catchingUp),
        );
        assert.deepEqual(
          onlyHostA.map((a) => `${a.rs}[${a.members.map((m) => `${m.copyId}:${Role[m.role]}${m.catchingUp ? '(catching up)' : ''}`).join(',')}]`),
          [],
          `round ${i}: RS whose state lives only on host-a before the kill`,
        );
        await Promise.all(['c1', 'c2'].map((id) => cl.copies.get(id)!.kill()));
        await recovered(cl, ['c1', 'c2']);
      });
      await waitFor(() => cl.controllers[0]!.output().includes('host fault'), { what: 'controller logged a host fault' });
      await Promise.all(['c1', 'c2'].map((id) => cl.restartCopy(id)));
      await withStatusOnFailure(cl, () => waitFor(
        async () => {
          const s = await cl.status(true);
          return s.copies.every((c) => c.status === CopyStatus.COPY_STATUS_UP) && s.assignments.every((a) => a.members.filter((m) => m.role === Role.ROLE_STANDBY).length === 1);
        },
        { what: 'host-a copies rejoined', timeoutMs: 30_000 },
      ));
    }
  });
});
