/**
 * `npm run start:counter`: the small quickstart. Starts a System Controller (embedded store, or Redis when
 * REDIS_URL is set), a Fault Manager and three counter copies as separate processes in
 * DISTRIBUTED_FAULT_TOLERANT mode (1 active + 1 standby per RS), drives a few increments,
 * prints where everything runs and how to use the CLI, then keeps running until Ctrl-C.
 * `--exit` (or UNDERSTUDY_DEMO_EXIT=1) stops everything after the demo instead.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ControllerClient, RoutingClient } from '@understudy/adsm';
import { Mode, Partitioning, Role } from '@understudy/proto';
import { ensureError, startProcess, unaryCall, type Proc } from '@understudy/runtime';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const CONTROLLER = process.env.UNDERSTUDY_CONTROLLERS?.split(',')[0] ?? '127.0.0.1:7100';
const EXIT = process.argv.includes('--exit') || process.env.UNDERSTUDY_DEMO_EXIT === '1';
const FAULT_MANAGER = process.env.UNDERSTUDY_FAULT_MANAGERS?.split(',')[0] ?? '127.0.0.1:7200';
const RS_COUNT = 8;

function say(line = ''): void {
  process.stdout.write(`${line}\n`);
}

async function main(): Promise<void> {
  const dataDir = path.join(ROOT, '.data');
  const logDir = path.join(dataDir, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  const redisUrl = process.env.REDIS_URL ?? '';
  const procs: Proc[] = [];
  const logTo = (name: string): ((l: string) => void) => {
    const out = fs.createWriteStream(path.join(logDir, `${name}.log`), { flags: 'a' });
    return (l) => out.write(`${l}\n`);
  };
  const stopAll = async (): Promise<void> => {
    for (const p of procs.reverse()) p.signal('SIGTERM');
    await Promise.race([Promise.all(procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 3000))]);
    for (const p of procs) await p.kill();
  };
  process.on('SIGINT', () => void stopAll().then(() => process.exit(0)));
  process.on('SIGTERM', () => void stopAll().then(() => process.exit(0)));

  say(`Understudy quickstart — store: ${redisUrl ? `Redis at ${redisUrl}` : `embedded (${path.relative(ROOT, dataDir)}/controller)`}`);
  procs.push(
    await startProcess({
      name: 'controller',
      cwd: ROOT,
      script: 'services/system-controller/src/main.ts',
      args: ['--id', 'controller-1', '--listen', CONTROLLER, '--data-dir', path.join(dataDir, 'controller')],
      env: { REDIS_URL: redisUrl },
      readyMsg: 'controller listening',
      onLine: logTo('controller'),
    }),
  );
  say(`  controller-1  listening on ${CONTROLLER}`);

  procs.push(
    await startProcess({
      name: 'fault-manager',
      cwd: ROOT,
      script: 'services/fault-manager/src/main.ts',
      args: ['--id', 'fm-1', '--listen', FAULT_MANAGER, '--controllers', CONTROLLER],
      readyMsg: 'fault manager listening',
      onLine: logTo('fault-manager'),
    }),
  );
  say(`  fm-1          listening on ${FAULT_MANAGER} (heartbeats every 200 ms; 3 missed = hang)`);

  const ctl = new ControllerClient({ addresses: [CONTROLLER], callTimeoutMs: 10_000 });
  await ctl.withLeader((c) =>
    unaryCall(c.applyTopology.bind(c), {
      topology: {
        apps: [{ name: 'counter', mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: RS_COUNT, standbys: 1, minCopies: 3, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] }],
        edges: [],
      },
    }),
  );
  for (const [id, host] of [['c1', 'host-a'], ['c2', 'host-b'], ['c3', 'host-c']] as const) {
    const p = await startProcess({
      name: id,
      cwd: ROOT,
      script: 'examples/counter/src/copy.ts',
      args: ['--copy-id', id, '--controllers', CONTROLLER, '--host', host, '--fault-managers', FAULT_MANAGER],
      readyMsg: 'copy listening',
      onLine: logTo(id),
    });
    procs.push(p);
    say(`  counter ${id}    listening on ${p.address} (host ${host}, pid ${p.pid})`);
  }

  const routing = new RoutingClient({ controllerAddresses: [CONTROLLER] });
  await routing.waitReady('counter', 30_000);
  say();
  say('Driving 30 increments over 6 keys (each acknowledged only once its standby has it)…');
  const keys = ['apples', 'pears', 'plums', 'figs', 'kiwis', 'limes'];
  for (let i = 0; i < 30; i++) {
    const key = keys[i % keys.length]!;
    await routing.deliver('counter', key, { key, by: 1 });
  }
  for (const key of keys) {
    const rs = routing.rsForKey('counter', key);
    const r = routing.route('counter', rs)!;
    const value = await routing.query<number>('counter', rs, { key });
    say(`  ${key.padEnd(7)} = ${String(value).padStart(3)}   (rs ${rs}, active ${r.activeCopyId}, epoch ${r.epoch})`);
  }
  const status = await ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: 'counter', includeAssignments: true }));
  say();
  say('Placement (RS: active → standby):');
  for (const a of status.assignments) {
    const act = a.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId ?? '-';
    const sb = a.members.filter((m) => m.role === Role.ROLE_STANDBY).map((m) => m.copyId).join(',') || '-';
    say(`  rs ${a.rs}: ${act} → ${sb}   epoch ${a.epoch}`);
  }
  say();
  say('Try the ops CLI from the repo root (another terminal):');
  say('  npx understudy status                      # leader, apps, copies');
  say('  npx understudy status --assignments        # every RS: epoch, active, standbys');
  say('  npx understudy switchover counter 0 --to <a standby of rs 0>');
  say('  npx understudy drain c3      /  npx understudy enable c3');
  say('  npx understudy status --json               # for scripts');
  say('  kill -9 <pid of a copy>                    # the fault manager reports it; its standbys take over');
  say(`Logs: ${path.relative(ROOT, logDir)}/*.log`);
  routing.close();
  ctl.close();
  if (EXIT) {
    await stopAll();
    say('Demo finished (--exit).');
    process.exit(0);
  }
  say('Running. Ctrl-C stops everything.');
}

main().catch((e) => {
  process.stderr.write(`quickstart failed: ${ensureError(e).message}\n`);
  if (/EADDRINUSE|address already in use|No address added/i.test(ensureError(e).message)) {
    process.stderr.write(`Is something already listening on ${CONTROLLER}? Set UNDERSTUDY_CONTROLLERS=127.0.0.1:<port> to use another port.\n`);
  }
  process.exit(1);
});
