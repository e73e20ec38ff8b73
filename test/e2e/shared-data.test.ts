/**
 * Shared data from a master RS end to end (R-ADSM, issue 4 item 4): a controller, a fault manager
 * and three copies of the `rates` test app (test/apps/rates.ts) as real processes on 127.0.0.1.
 * RS 0 is the master (`sharedMasterRs: 0`): it holds a rate table (every rate set, in order); the
 * handlers of every other RS read it through `ctx.shared` and reply with what they saw.
 *
 * What the tests show:
 * 1. An update acknowledged by the master RS becomes visible in `handle()` on EVERY copy, and every
 *    copy sees the table grow in the order the rates were set (each read is a prefix of the rates
 *    sent; the views of all copies reach the same sequence number).
 * 2. kill -9 of the master RS's active in the middle of a sequence of updates: the standby takes
 *    over at a new epoch, the followers switch to it, every update (each resent with its message
 *    id until acknowledged) is in the table exactly once and in order on every surviving copy.
 * 3. The killed copy, restarted (new incarnation, empty), catches up by snapshot: its view reaches
 *    the master's sequence number, and once an RS is switched over to it, its handler sees the
 *    whole table; later updates reach it too.
 * 4. Bad input: FollowShared refuses the wrong app, a non-master RS, a copy that is not the master
 *    active, a follower at a newer epoch (a deposed source) and a missing copy id; the topology
 *    refuses an out-of-range master RS and a changed one.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { ControllerClient, RoutingClient } from '@understudy/adsm';
import {
  AdsmServiceClient,
  CopyStatus,
  Mode,
  Partitioning,
  Role,
  type AppSpec,
  type FollowSharedRequest,
  type FollowSharedResponse,
  type GetCopyInfoResponse,
  type GetStatusResponse,
} from '@understudy/proto';
import { UnderstudyError, clientChannelOptions, fromServiceError, insecureCredentials, unaryCall } from '@understudy/runtime';
import { MASTER_RS, type ReadReply } from '../apps/rates';
import { freePort, startControllerProc, startFaultManagerProc, startProcess, type Proc } from '../harness/processes';
import { waitFor } from '../harness/wait';

const APP = 'rates';
const RS = 6;
const COPIES = ['s1', 's2', 's3'];

function ratesSpec(o: Partial<AppSpec> = {}): AppSpec {
  return {
    name: APP,
    mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT,
    rsCount: RS,
    // Every RS on every copy (1 active + 2 standbys): a restarted copy is a standby of every RS again.
    standbys: 2,
    minCopies: COPIES.length,
    partitioning: Partitioning.PARTITIONING_HASH,
    rangeStarts: [],
    detection: {
      heartbeatIntervalMs: 100,
      missedHeartbeats: 5,
      maxEventLoopLagMs: 0,
      maxCpuPercent: 0,
      maxRssBytes: 0,
      maxQueueDepth: 0,
      breachSamples: 0,
      probeIntervalMs: 0,
      probeTimeoutMs: 0,
    },
    sharedMasterRs: MASTER_RS,
    ...o,
  };
}

describe('shared data from a master RS (3 rates copies, RS 0 is the master)', () => {
  let dataDir: string;
  let controller: Proc;
  let fm: Proc;
  let addresses: string[];
  let ctl: ControllerClient;
  let routing: RoutingClient;
  const copies = new Map<string, Proc>();
  const clients = new Map<string, AdsmServiceClient>();
  /** Every rate acknowledged by the master RS, in the order it was set. */
  const rates: number[] = [];

  const startCopy = async (id: string): Promise<Proc> => {
    const p = await startProcess({
      name: `rates copy ${id}`,
      script: 'test/apps/rates-copy.ts',
      args: ['--copy-id', id, '--controllers', addresses.join(','), '--host', `host-${id}`, '--heartbeat-interval-ms', '100', '--fault-managers', fm.address],
      readyMsg: 'copy listening',
    });
    copies.set(id, p);
    clients.get(id)?.close();
    clients.set(id, new AdsmServiceClient(p.address, insecureCredentials(), clientChannelOptions()));
    return p;
  };
  const status = (): Promise<GetStatusResponse> => ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: APP, includeAssignments: true }, { deadlineMs: 3000 }), 10_000);
  const info = (id: string): Promise<GetCopyInfoResponse> => {
    const c = clients.get(id)!;
    return unaryCall(c.getCopyInfo.bind(c), {}, { deadlineMs: 3000 });
  };
  /** Set the next rate through the master RS; resolves once acknowledged (resent with its id until then). */
  const setRate = async (rate: number): Promise<void> => {
    await routing.deliver(APP, '', { op: 'set', rate }, { rs: MASTER_RS, messageId: `rate-${rate}`, deadlineMs: 30_000 });
    rates.push(rate);
  };
  /** What the handler of `rs` sees in `ctx.shared`, on the copy that is its active now. */
  const read = async (rs: number): Promise<{ copyId: string; reply: ReadReply }> => {
    const d = await routing.deliver<ReadReply>(APP, '', { op: 'read' }, { rs, deadlineMs: 20_000 });
    return { copyId: d.copyId, reply: d.reply };
  };
  /** Every read must be a prefix of the rates set so far: the table only grows, in order. */
  const assertPrefix = (r: { copyId: string; reply: ReadReply }): void => {
    assert.ok(r.reply.shared !== null, `RS ${r.reply.rs} on ${r.copyId}: the handler saw no shared data`);
    const seen = r.reply.shared;
    assert.deepEqual(seen, rates.slice(0, seen.length), `RS ${r.reply.rs} on ${r.copyId} saw ${JSON.stringify(seen)}, not a prefix of ${JSON.stringify(rates)}`);
  };
  /** Wait until the handler of every non-master RS sees the whole table; returns the copies that answered. */
  const everyRsSeesAll = async (what: string): Promise<Set<string>> => {
    const readers = new Set<string>();
    await waitFor(async () => {
      readers.clear();
      for (let rs = 0; rs < RS; rs++) {
        if (rs === MASTER_RS) continue;
        const r = await read(rs);
        assertPrefix(r);
        if (r.reply.shared!.length !== rates.length) return false;
        readers.add(r.copyId);
      }
      return true;
    }, { what, timeoutMs: 20_000 });
    return readers;
  };
  /** Wait until the view of every listed copy is loaded at the master active's sequence number. */
  const viewsConverged = async (ids: readonly string[], what: string): Promise<number> =>
    waitFor(async () => {
      const infos = await Promise.all(ids.map((id) => info(id)));
      const src = infos.find((i) => i.shared?.source);
      if (!src) return false;
      const seq = src.shared!.seq;
      return infos.every((i) => i.shared?.loaded && i.shared.seq === seq && i.shared.epoch === src.shared!.epoch) ? seq : false;
    }, { what, timeoutMs: 20_000 });

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-shared-'));
    const port = await freePort();
    addresses = [`127.0.0.1:${port}`];
    controller = await startControllerProc({ id: 'ctl-shared', port, dataDir });
    ctl = new ControllerClient({ addresses, callTimeoutMs: 10_000 });
    await ctl.withLeader((c) => unaryCall(c.applyTopology.bind(c), { topology: { apps: [ratesSpec()], edges: [] } }), 10_000);
    fm = await startFaultManagerProc({ id: 'fm-shared', controllers: addresses });
    await Promise.all(COPIES.map((id) => startCopy(id)));
    await waitFor(async () => {
      const s = await status();
      const a = s.apps.find((x) => x.spec?.name === APP);
      return a && !s.passive && a.activated && a.rsWithActive === RS;
    }, { what: 'rates placed', timeoutMs: 30_000 });
    routing = new RoutingClient({ controllerAddresses: addresses, deliverDeadlineMs: 20_000 });
    await routing.waitReady(APP, 15_000);
  });

  after(async () => {
    routing?.close();
    ctl?.close();
    for (const c of clients.values()) c.close();
    await Promise.all([...copies.values()].map((p) => p.kill()));
    await fm?.kill();
    await controller?.kill();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('the controller carries the master RS in the topology; every copy follows it', async () => {
    const s = await status();
    assert.equal(s.apps.find((a) => a.spec?.name === APP)?.spec?.sharedMasterRs, MASTER_RS);
    assert.equal(routing.appSpec(APP)?.sharedMasterRs, MASTER_RS);
    await viewsConverged(COPIES, 'every copy holds the (empty) shared data');
    const source = (await Promise.all(COPIES.map(async (id) => ({ id, i: await info(id) })))).filter((x) => x.i.shared?.source);
    assert.equal(source.length, 1, 'exactly one copy serves the shared data');
    assert.equal(source[0]!.id, routing.route(APP, MASTER_RS)?.activeCopyId, 'the master RS active serves it');
    assert.equal(source[0]!.i.shared?.followers, COPIES.length - 1, 'the other copies follow it');
  });

  test('an update to the master RS becomes visible in handle() on every copy, in order', async () => {
    for (const rate of [10, 11, 12, 13, 14]) {
      await setRate(rate);
      const readers = await everyRsSeesAll(`every RS handler sees ${rates.length} rates`);
      assert.deepEqual([...readers].sort(), [...COPIES].sort(), 'handlers on every copy read the table');
    }
    // Standby-only views too (the view is the same everywhere, not just where handlers ran).
    await viewsConverged(COPIES, 'every copy at the master sequence number');
  });

  test('kill -9 of the master RS active mid-sequence: every acknowledged update once and in order on every copy', async () => {
    const before = routing.route(APP, MASTER_RS)!;
    const victim = before.activeCopyId;
    let acked = 0;
    const writer = (async () => {
      for (let rate = 20; rate < 32; rate++) {
        await setRate(rate);
        acked++;
      }
    })();
    let readsDuring = 0;
    try {
      await waitFor(() => acked >= 3, { what: '3 updates before the kill' });
      await copies.get(victim)!.kill();
      // Handlers keep reading while the master fails over: every read stays a prefix.
      do {
        for (let rs = 1; rs < RS; rs++) {
          try {
            assertPrefix(await read(rs));
            readsDuring++;
          } catch (e) {
            if (e instanceof assert.AssertionError) throw e;
          }
        }
        if (acked < 12) await Promise.race([writer, new Promise((r) => setTimeout(r, 20))]);
      } while (acked < 12);
    } finally {
      await writer;
    }
    assert.ok(readsDuring > 0, 'reads ran during the failover');
    const after = routing.route(APP, MASTER_RS)!;
    assert.notEqual(after.activeCopyId, victim, 'the master RS moved');
    assert.ok(after.epoch > before.epoch, 'at a new epoch');
    const survivors = COPIES.filter((id) => id !== victim);
    const readers = await everyRsSeesAll('every RS handler sees every rate after the failover');
    assert.deepEqual([...readers].sort(), [...survivors].sort());
    await viewsConverged(survivors, 'the survivors converge at the new master');
    const infos = await Promise.all(survivors.map((id) => info(id)));
    for (const i of infos) assert.equal(i.shared?.epoch, after.epoch, `${i.copyId} follows the new epoch`);
  });

  test('a restarted copy catches up by snapshot and its handlers see the whole table', async () => {
    const victim = COPIES.find((id) => (copies.get(id)!.child.exitCode !== null || copies.get(id)!.child.signalCode !== null))!;
    assert.ok(victim, 'the copy killed before');
    await startCopy(victim);
    // The controller lists it as a standby of every RS again; its view catches up meanwhile.
    await viewsConverged(COPIES, `${victim} caught up with the shared data`);
    const target = await waitFor(async () => {
      const s = await status();
      const me = s.copies.find((c) => c.copyId === victim);
      if (me?.status !== CopyStatus.COPY_STATUS_UP) return false;
      const a = s.assignments.find((x) => x.rs !== MASTER_RS && x.members.some((m) => m.copyId === victim && m.role === Role.ROLE_STANDBY && !m.catchingUp));
      return a?.rs;
    }, { what: `${victim} a caught-up standby of some RS`, timeoutMs: 30_000 });
    await ctl.withLeader((c) => unaryCall(c.switchover.bind(c), { app: APP, rs: target, toCopyId: victim }, { deadlineMs: 10_000 }), 15_000);
    const r = await waitFor(async () => {
      const x = await read(target);
      return x.copyId === victim ? x : false;
    }, { what: `RS ${target} served by ${victim}` });
    assertPrefix(r);
    assert.equal(r.reply.shared!.length, rates.length, `the restarted copy's handler sees the whole table (${rates.length} rates)`);
    await setRate(99);
    const readers = await everyRsSeesAll('an update after the restart reaches every RS');
    assert.ok(readers.has(victim), 'including the restarted copy');
  });

  test('bad input: FollowShared and the topology refuse what they cannot serve', async () => {
    const master = routing.route(APP, MASTER_RS)!;
    const other = COPIES.find((id) => id !== master.activeCopyId)!;
    const follow = (id: string, r: Partial<FollowSharedRequest>): Promise<{ code: grpc.status; message: string; reason?: string; first?: FollowSharedResponse }> =>
      new Promise((resolve) => {
        const c = clients.get(id)!;
        const call = c.followShared({ app: APP, rs: MASTER_RS, copyId: 'probe', epoch: 0, seq: 0, hasState: false, ...r });
        let first: FollowSharedResponse | undefined;
        call.on('data', (m: FollowSharedResponse) => {
          first ??= m;
          call.cancel();
        });
        call.on('error', (e: grpc.ServiceError) => {
          const err = fromServiceError(e) as UnderstudyError;
          resolve({ code: e.code, message: e.details, reason: err.metadata?.['understudy-reason'], first });
        });
      });
    const wrongApp = await follow(master.activeCopyId, { app: 'counter' });
    assert.equal(wrongApp.code, grpc.status.NOT_FOUND);
    const wrongRs = await follow(master.activeCopyId, { rs: 3 });
    assert.equal(wrongRs.code, grpc.status.INVALID_ARGUMENT);
    assert.match(wrongRs.message, /not the master RS/);
    const noId = await follow(master.activeCopyId, { copyId: '' });
    assert.equal(noId.code, grpc.status.INVALID_ARGUMENT);
    const notActive = await follow(other, {});
    assert.equal(notActive.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(notActive.reason, 'NOT_ACTIVE');
    const deposed = await follow(master.activeCopyId, { epoch: master.epoch + 5, seq: 0, hasState: true });
    assert.equal(deposed.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(deposed.reason, 'STALE_EPOCH', 'a follower that has seen a newer epoch refuses this source');
    // A good subscription starts with a snapshot of the whole table.
    const good = await follow(master.activeCopyId, {});
    assert.equal(good.code, grpc.status.CANCELLED);
    assert.equal(good.first?.snapshot, true);
    assert.deepEqual((JSON.parse(Buffer.from(good.first!.state).toString()) as { history: number[] }).history, rates);

    const apply = (spec: AppSpec): Promise<grpc.status> =>
      ctl.withLeader((c) => unaryCall(c.applyTopology.bind(c), { topology: { apps: [spec], edges: [] } })).then(
        () => grpc.status.OK,
        (e: UnderstudyError) => e.code,
      );
    assert.equal(await apply(ratesSpec({ name: 'rates2', sharedMasterRs: RS })), grpc.status.INVALID_ARGUMENT, 'master RS out of range');
    assert.equal(await apply(ratesSpec({ sharedMasterRs: 1 })), grpc.status.FAILED_PRECONDITION, 'changing the master RS');
    assert.equal(await apply(ratesSpec({ sharedMasterRs: undefined })), grpc.status.FAILED_PRECONDITION, 'dropping the master RS');
    // Still serving.
    await setRate(100);
    await everyRsSeesAll('still serving after bad input');
  });
});
