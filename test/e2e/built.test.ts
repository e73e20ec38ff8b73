/**
 * The deployable bundles (`node scripts/build.mjs --all` → dist/, what `npm run bench` and a
 * deployment run) work end to end: built here, then a controller, a fault manager and three
 * counter copies started from them (no tsx in their command lines); a copy killed with kill -9
 * under load fails over and the counters equal the acknowledged increments exactly.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { CopyStatus, Role } from '@understudy/proto';
import { CounterLoad, keys, startCounterCluster, type CounterCluster } from '../harness/cluster';
import { ROOT } from '../harness/processes';
import { waitFor } from '../harness/wait';

let cl: CounterCluster | undefined;
const runBuiltBefore = process.env.UNDERSTUDY_RUN_BUILT;

before(() => {
  execFileSync(process.execPath, ['scripts/build.mjs', '--all'], { cwd: ROOT, stdio: 'pipe' });
  process.env.UNDERSTUDY_RUN_BUILT = '1';
});

after(async () => {
  await cl?.stop();
  if (runBuiltBefore === undefined) delete process.env.UNDERSTUDY_RUN_BUILT;
  else process.env.UNDERSTUDY_RUN_BUILT = runBuiltBefore;
});

function cmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

test('services and copies run from their bundles: kill -9 under load fails over, counters exact', async () => {
  cl = await startCounterCluster({ rsCount: 6, copies: 3, standbys: 1, faultManagers: 1, detection: { heartbeatIntervalMs: 100, missedHeartbeats: 3 } });
  const c = cl;
  const copyArgs = cmdline(c.copies.get('c1')!.pid);
  assert.ok(copyArgs.includes('dist/example-counter/copy.js'), `copy runs its bundle: ${copyArgs.join(' ')}`);
  assert.ok(!copyArgs.includes('tsx'), `no tsx loader: ${copyArgs.join(' ')}`);
  assert.ok(cmdline(c.controllers[0]!.pid).includes('dist/system-controller/main.js'));
  assert.ok(cmdline(c.faultManagers[0]!.pid).includes('dist/fault-manager/main.js'));

  const load = new CounterLoad(c.routing, keys(12));
  load.start();
  try {
    await waitFor(() => load.count >= 50, { what: 'load running' });
    await waitFor(async () => (await c.status(true)).assignments.every((a) => a.members.every((m) => !m.catchingUp)), { what: 'standbys caught up', timeoutMs: 30_000 });
    const s = await c.status();
    const victim = [...s.copies].sort((a, b) => b.activeCount - a.activeCount)[0]!.copyId;
    await c.copies.get(victim)!.kill();
    await waitFor(
      async () => {
        const st = await c.status(true);
        const up = new Set(st.copies.filter((x) => x.status === CopyStatus.COPY_STATUS_UP).map((x) => x.copyId));
        return st.copies.find((x) => x.copyId === victim)?.status === CopyStatus.COPY_STATUS_OUT_OF_SERVICE && st.assignments.every((a) => up.has(a.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId ?? ''));
      },
      { what: `every RS recovered off ${victim}`, timeoutMs: 20_000 },
    );
    const n = load.count;
    await waitFor(() => load.count >= n + 50, { what: 'load continues after the failover', timeoutMs: 20_000 });
  } finally {
    await load.stop();
  }
  assert.deepEqual(load.failures, [], 'every increment acknowledged');
  const values = await load.values();
  for (const [key, n] of load.acked) assert.equal(values.get(key), n, `counter ${key}: value equals acknowledged increments`);
});
