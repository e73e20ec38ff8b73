/**
 * End to end: a real controller replica in this process (embedded in-memory store) and the
 * real `understudy` command as a child process — `node cli/bin/understudy.js …` and once
 * through `npx understudy …` from the repository root.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { AdsmServiceService, ControllerServiceClient, Role, type GetStatusResponse, type SetRolesRequest, type SetRolesResponse } from '@understudy/proto';
import { freePort, openStore, silentLogger, unaryCall, type Store } from '@understudy/runtime';
import { waitFor } from '../../test/harness/wait';
import { startController, type ControllerHandle } from '@understudy/system-controller';

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.join(ROOT, 'cli', 'bin', 'understudy.js');

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Run the CLI as a child process (never synchronously: the controller lives in this process). */
function understudy(args: readonly string[], o: { npx?: boolean; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...o.env };
  if (!o.env || !('UNDERSTUDY_CONTROLLERS' in o.env)) delete env.UNDERSTUDY_CONTROLLERS;
  const started = Date.now();
  const child = o.npx
    ? spawn('npx', ['understudy', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

function show(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** Lines of stderr that come from the CLI (npx may add its own warnings). */
function cliErrors(r: Run): string[] {
  return r.stderr.split('\n').filter((l) => l.startsWith('understudy: '));
}

/** A stand-in copy: accepts SetRoles, so the controller can place RS on it. */
async function standInCopy(): Promise<{ address: string; stop(): Promise<void> }> {
  const server = new grpc.Server();
  const no = (_c: unknown, cb: grpc.sendUnaryData<unknown>): void => cb({ code: grpc.status.UNIMPLEMENTED, details: 'stand-in' });
  server.addService(AdsmServiceService, {
    setRoles: (c: grpc.ServerUnaryCall<SetRolesRequest, SetRolesResponse>, cb: grpc.sendUnaryData<SetRolesResponse>) => cb(null, { applied: c.request.entries.length, ignoredStale: 0 }),
    deliver: no,
    query: no,
    replicate: no,
    installSnapshot: no,
    getCopyInfo: no,
  } as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { address: `127.0.0.1:${port}`, stop: () => new Promise<void>((res) => server.tryShutdown(() => res())) };
}

const VALID = `
apps:
  - name: cli-e2e
    mode: DISTRIBUTED
    rsCount: 2
    minCopies: 2
  - { name: cli-sink, mode: FAULT_TOLERANT, rsCount: 1, standbys: 1, minCopies: 2 }
edges:
  - { from: cli-e2e, to: cli-sink, keyField: key }
`;

const MALFORMED = `
apps:
  - name: cli-bad
    mode: DISTRIBUTED
    rsCount: 0
    replicas: 3
`;

describe('understudy CLI against a real controller', () => {
  let store: Store;
  let controller: ControllerHandle;
  let client: ControllerServiceClient;
  let dir: string;
  let addr: string;
  const copies: { address: string; stop(): Promise<void> }[] = [];

  const status = async (): Promise<GetStatusResponse> => unaryCall(client.getStatus.bind(client), { app: '', includeAssignments: true });

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'understudy-cli-'));
    await writeFile(path.join(dir, 'topology.yaml'), VALID);
    await writeFile(path.join(dir, 'malformed.yaml'), MALFORMED);
    await writeFile(path.join(dir, 'broken.json'), '{"apps": [ {"name": "x", ');
    store = await openStore({ dataDir: null });
    controller = await startController({
      controllerId: 'cli-e2e',
      store,
      logger: silentLogger(),
      listenAddress: '127.0.0.1:0',
      leaseTtlMs: 2000,
      passiveTimeoutMs: 200,
      tickIntervalMs: 50,
    });
    addr = controller.address;
    client = new ControllerServiceClient(addr, grpc.credentials.createInsecure());
    await waitFor(async () => controller.isLeader() && !(await status()).passive, { what: 'the replica to lead' });
  });

  after(async () => {
    client?.close();
    await controller?.stop();
    await store?.close();
    await Promise.all(copies.map((c) => c.stop()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('apply a valid file → exit 0', async () => {
    const r = await understudy(['--controllers', addr, 'apply', '-f', path.join(dir, 'topology.yaml')]);
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /^applied .*topology\.yaml: state version \d+/, show(r));
    const s = await status();
    assert.deepEqual(s.apps.map((a) => a.spec!.name).sort(), ['cli-e2e', 'cli-sink']);
  });

  test('apply a malformed file → exit 2 naming the file and the fields', async () => {
    const file = path.join(dir, 'malformed.yaml');
    const r = await understudy(['--controllers', addr, 'apply', '-f', file]);
    assert.equal(r.code, 2, show(r));
    assert.equal(r.stdout, '', show(r));
    assert.match(r.stderr, new RegExp(`^understudy: bad topology file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(2 problems\\)`), show(r));
    assert.match(r.stderr, /apps\[0\] \(cli-bad\): unknown key 'replicas'/, show(r));
    assert.match(r.stderr, /apps\[0\] \(cli-bad\)\.rsCount: expected an integer >= 1, got 0/, show(r));
    // Nothing was sent.
    assert.ok(!(await status()).apps.some((a) => a.spec!.name === 'cli-bad'));
  });

  test('apply broken JSON with --json → exit 2 and a JSON error', async () => {
    const r = await understudy(['--controllers', addr, '--json', 'apply', '-f', path.join(dir, 'broken.json')]);
    assert.equal(r.code, 2, show(r));
    const j = JSON.parse(r.stdout) as { error: { code: string; message: string } };
    assert.equal(j.error.code, 'INVALID_ARGUMENT');
    assert.match(j.error.message, /broken\.json: not valid JSON/);
  });

  test('status --json parses and shows the app', async () => {
    const r = await understudy(['--controllers', addr, 'status', '--json']);
    assert.equal(r.code, 0, show(r));
    const j = JSON.parse(r.stdout) as { leaderId: string; leaderAddress: string; apps: { spec: { name: string; mode: string; rsCount: number } }[]; edges: unknown[] };
    assert.equal(j.leaderId, 'cli-e2e');
    assert.equal(j.leaderAddress, addr);
    const app = j.apps.find((a) => a.spec.name === 'cli-e2e');
    assert.ok(app, show(r));
    assert.equal(app.spec.mode, 'DISTRIBUTED');
    assert.equal(app.spec.rsCount, 2);
    assert.deepEqual(j.edges, [{ from: 'cli-e2e', to: 'cli-sink', keyField: 'key' }]);
  });

  test('npx understudy status (controllers from UNDERSTUDY_CONTROLLERS) prints tables', async () => {
    const r = await understudy(['status', '--app', 'cli-e2e'], { npx: true, env: { UNDERSTUDY_CONTROLLERS: addr } });
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /Leader\n/);
    assert.match(r.stdout, /│ cli-e2e +│ DISTRIBUTED +│ 2 +│/, show(r));
    assert.ok(!r.stdout.includes('cli-sink │ FAULT_TOLERANT'), '--app filters');
  });

  test('switchover of an unknown app → exit 3', async () => {
    const r = await understudy(['--controllers', addr, 'switchover', 'no-such-app', '0', '--to', 'c1']);
    assert.equal(r.code, 3, show(r));
    assert.match(cliErrors(r)[0] ?? '', /^understudy: switchover refused: .*no-such-app.* \(NOT_FOUND\)$/, show(r));
  });

  test('drain of an unknown copy → exit 3 (and as JSON)', async () => {
    const r = await understudy(['--controllers', addr, 'drain', 'ghost-copy']);
    assert.equal(r.code, 3, show(r));
    assert.match(cliErrors(r)[0] ?? '', /^understudy: drain refused: .*ghost-copy.* \(NOT_FOUND\)$/, show(r));
    const j = await understudy(['--controllers', addr, 'drain', 'ghost-copy', '--json']);
    assert.equal(j.code, 3, show(j));
    const parsed = JSON.parse(j.stdout) as { error: { code: string; message: string } };
    assert.equal(parsed.error.code, 'NOT_FOUND');
    assert.match(parsed.error.message, /ghost-copy/);
  });

  test('usage errors → exit 2', async () => {
    const r = await understudy(['--controllers', addr, 'switchover', 'cli-e2e', 'first', '--to', 'c1']);
    assert.equal(r.code, 2, show(r));
    assert.match(r.stderr, /^understudy: RS must be a resource set number/, show(r));
    const u = await understudy(['--controllers', addr, 'frobnicate']);
    assert.equal(u.code, 2, show(u));
    assert.match(u.stderr, /^understudy: unknown command 'frobnicate'/, show(u));
  });

  describe('with copies registered', () => {
    before(async () => {
      for (const [copyId, app] of [
        ['e2e-1', 'cli-e2e'],
        ['e2e-2', 'cli-e2e'],
        ['sink-1', 'cli-sink'],
        ['sink-2', 'cli-sink'],
      ] as const) {
        const c = await standInCopy();
        copies.push(c);
        await unaryCall(client.registerCopy.bind(client), { copyId, app, host: 'stand-in', address: c.address, incarnation: 1 });
      }
      await waitFor(async () => (await status()).apps.every((a) => a.activated && a.rsWithActive === a.spec!.rsCount), { what: 'both apps activated' });
    });

    test('status --assignments shows every RS', async () => {
      const r = await understudy(['--controllers', addr, 'status', '--assignments']);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /Assignments\n/);
      assert.match(r.stdout, /│ cli-e2e +│ 0 +│ \d+ +│ e2e-[12] +│/, show(r));
      assert.match(r.stdout, /│ e2e-1 +│ cli-e2e +│ stand-in +│ 127\.0\.0\.1:\d+ +│ UP +│/, show(r));
    });

    test('switchover to a copy that is not a standby → exit 4', async () => {
      const s = await status();
      const a = s.assignments.find((x) => x.app === 'cli-e2e' && x.rs === 0)!;
      const active = a.members.find((m) => m.role === Role.ROLE_ACTIVE)!.copyId;
      const other = active === 'e2e-1' ? 'e2e-2' : 'e2e-1';
      const r = await understudy(['--controllers', addr, 'switchover', 'cli-e2e', '0', '--to', other]);
      assert.equal(r.code, 4, show(r));
      assert.match(cliErrors(r)[0] ?? '', new RegExp(`^understudy: switchover refused: .*${other}.* \\(FAILED_PRECONDITION\\)$`), show(r));
    });

    test('switchover to the standby → exit 0 with the new active', async () => {
      const s = await status();
      const a = s.assignments.find((x) => x.app === 'cli-sink' && x.rs === 0)!;
      const standby = a.members.find((m) => m.role === Role.ROLE_STANDBY)!.copyId;
      const r = await understudy(['--controllers', addr, '--json', 'switchover', 'cli-sink', '0', '--to', standby]);
      assert.equal(r.code, 0, show(r));
      const j = JSON.parse(r.stdout) as { assignment: { epoch: number; members: { copyId: string; role: string }[] } };
      assert.equal(j.assignment.members.find((m) => m.role === 'ACTIVE')?.copyId, standby);
      assert.ok(j.assignment.epoch > a.epoch, 'a switchover takes a new epoch');
    });

    test('disable then enable a copy', async () => {
      const d = await understudy(['--controllers', addr, 'disable', 'sink-1']);
      assert.equal(d.code, 0, show(d));
      assert.match(d.stdout, /^disabled sink-1: \d+ RS failed over/);
      const e = await understudy(['--controllers', addr, 'enable', 'sink-1']);
      assert.equal(e.code, 0, show(e));
      assert.match(e.stdout, /^enabled sink-1: status UP/);
    });

    test('drain a copy → exit 0', async () => {
      const r = await understudy(['--controllers', addr, 'drain', 'sink-2']);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /^drained sink-2: moved \d+ active and \d+ standby RS/);
    });
  });

  test('an unreachable controller → exit 5 within the timeout, naming the address', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const timeoutMs = 1500;
    const r = await understudy(['--controllers', dead, '--timeout-ms', String(timeoutMs), 'status']);
    assert.equal(r.code, 5, show(r));
    const line = cliErrors(r)[0] ?? '';
    assert.match(line, new RegExp(`^understudy: no controller reachable: tried ${dead} for (\\d+) ms \\(timeout ${timeoutMs} ms\\); last error: .+ \\(UNAVAILABLE\\)$`), show(r));
    const spent = Number(/for (\d+) ms/.exec(line)![1]);
    assert.ok(spent <= timeoutMs + 250, `gave up after ${spent} ms (timeout ${timeoutMs} ms)`);
    // Process start-up (tsx) included, the whole command must stay well bounded.
    assert.ok(r.ms < timeoutMs + 20_000, `took ${r.ms} ms`);
  });
});

describe('understudy CLI with two controller replicas', () => {
  let store: Store;
  let replicas: ControllerHandle[] = [];

  before(async () => {
    // Two replicas in this process sharing one in-memory store: one leads, one follows.
    store = await openStore({ dataDir: null });
    for (const id of ['rep-a', 'rep-b']) {
      replicas.push(await startController({ controllerId: id, store, logger: silentLogger(), listenAddress: '127.0.0.1:0', leaseTtlMs: 2000, passiveTimeoutMs: 200, tickIntervalMs: 50 }));
    }
    await waitFor(async () => replicas.filter((r) => r.isLeader()).length === 1, { what: 'exactly one leader' });
  });

  after(async () => {
    for (const r of replicas) await r.stop();
    replicas = [];
    await store?.close();
  });

  test('given only the follower, the CLI follows its redirect to the leader', async () => {
    const leader = replicas.find((r) => r.isLeader())!;
    const follower = replicas.find((r) => !r.isLeader())!;
    const r = await understudy(['--controllers', follower.address, '--json', 'status']);
    assert.equal(r.code, 0, show(r));
    const j = JSON.parse(r.stdout) as { leaderId: string; leaderAddress: string };
    assert.equal(j.leaderId, leader.controllerId);
    assert.equal(j.leaderAddress, leader.address);
  });

  test('a dead address first in the list is skipped', async () => {
    const leader = replicas.find((r) => r.isLeader())!;
    const dead = `127.0.0.1:${await freePort()}`;
    const r = await understudy(['--controllers', `${dead},${replicas.map((x) => x.address).join(',')}`, '--json', 'status']);
    assert.equal(r.code, 0, show(r));
    assert.equal((JSON.parse(r.stdout) as { leaderId: string }).leaderId, leader.controllerId);
  });
});
