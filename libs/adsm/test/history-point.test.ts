/**
 * A new active offers a standby new at its epoch the batches on top of the history point it
 * started the epoch from (ReplicateRequest.base); a standby at exactly that point takes them
 * without a snapshot, any other gets the snapshot as before. Real copies (in-process gRPC
 * servers on 127.0.0.1), roles set directly through the AdsmService the way the controller does;
 * each copy logs at debug into memory, which tells a snapshot install from a base sync.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import pino from 'pino';
import { AdsmServiceClient, Role, type Member } from '@understudy/proto';
import { FailedPreconditionError, clientChannelOptions, insecureCredentials, unaryCall } from '@understudy/runtime';
import { decodeJson, encodeJson, startCopy, type CopyHandle } from '../src/index';
import { counterApp } from '../../../examples/counter/src/counter';
import { membersOf } from './members';

const APP = 'counter';
const NO_CONTROLLER = ['127.0.0.1:1'];

interface LogLine {
  msg: string;
  rs?: number;
  epoch?: number;
  seq?: number;
  method?: string;
  details?: string;
}

describe('replication from a shared history point (no snapshot when the standby already has the state)', () => {
  const copies: CopyHandle[] = [];
  const logs = new Map<string, LogLine[]>();
  const clients = new Map<string, AdsmServiceClient>();
  const client = (c: CopyHandle): AdsmServiceClient => {
    let cl = clients.get(c.copyId);
    if (!cl) clients.set(c.copyId, (cl = new AdsmServiceClient(c.address, insecureCredentials(), clientChannelOptions())));
    return cl;
  };
  const members = membersOf;
  const setRole = async (c: CopyHandle, rs: number, role: Role, epoch: number, version: number, m: Member[]): Promise<void> => {
    const cl = client(c);
    await unaryCall(cl.setRoles.bind(cl), { copyId: c.copyId, incarnation: c.incarnation, leaderTerm: 1, entries: [{ app: APP, rs, role, epoch, version, members: m }], full: false });
  };
  const place = async (rs: number, epoch: number, version: number, active: CopyHandle, standbys: CopyHandle[]): Promise<void> => {
    const m = members(active, standbys);
    await Promise.all([setRole(active, rs, Role.ROLE_ACTIVE, epoch, version, m), ...standbys.map((s) => setRole(s, rs, Role.ROLE_STANDBY, epoch, version, m))]);
  };
  const inc = async (c: CopyHandle, rs: number, key: string, messageId: string): Promise<number> => {
    const cl = client(c);
    const res = await unaryCall(cl.deliver.bind(cl), { app: APP, rs, messageId, payload: encodeJson({ key }), key, routeEpoch: 0 });
    return decodeJson<{ value: number }>(res.reply).value;
  };
  const query = async (c: CopyHandle, rs: number, key: string): Promise<number> => {
    const cl = client(c);
    return decodeJson<number>((await unaryCall(cl.query.bind(cl), { app: APP, rs, query: encodeJson({ key }) })).result);
  };
  const seqOf = async (c: CopyHandle, rs: number): Promise<{ seq: number; synced: boolean; epoch: number }> => {
    const cl = client(c);
    const info = await unaryCall(cl.getCopyInfo.bind(cl), {});
    const r = info.rs.find((x) => x.rs === rs);
    return { seq: Number(r?.appliedSeq ?? -1), synced: r?.synced ?? false, epoch: Number(r?.epoch ?? -1) };
  };
  /** What copy `c` logged for `rs` at `epoch` about how it got in sync. */
  const syncs = (c: CopyHandle, rs: number, epoch: number): { base: number; snapshot: number } => {
    const mine = (logs.get(c.copyId) ?? []).filter((l) => l.rs === rs && l.epoch === epoch);
    return { base: mine.filter((l) => /synced without a snapshot/.test(l.msg)).length, snapshot: mine.filter((l) => l.msg === 'snapshot installed').length };
  };

  before(async () => {
    for (const id of ['a', 'b', 'c']) {
      const lines: LogLine[] = [];
      logs.set(id, lines);
      const sink = new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
          cb();
        },
      });
      const logger = pino({ level: 'debug' }, sink);
      copies.push(await startCopy({ app: counterApp, copyId: id, incarnation: Date.now() + copies.length, controllerAddresses: NO_CONTROLLER, logger, deliverTimeoutMs: 1500, heartbeatIntervalMs: 60_000 }));
    }
  });
  after(async () => {
    for (const cl of clients.values()) cl.close();
    await Promise.all(copies.map((c) => c.stop()));
  });

  test('a switchover: the old active and the other standby take the new epoch without a snapshot', async () => {
    const [a, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(0, 1, 1, a, [b, c]);
    for (let i = 0; i < 30; i++) await inc(a, 0, 'x', `x${i}`);
    // Move the ACTIVE role to b (what a planned move does once a is paused): a and c are at b's point.
    await place(0, 2, 2, b, [a, c]);
    assert.equal(await inc(b, 0, 'x', 'x30'), 31);
    assert.deepEqual(syncs(a, 0, 2), { base: 1, snapshot: 0 }, 'old active synced from the shared point');
    assert.deepEqual(syncs(c, 0, 2), { base: 1, snapshot: 0 }, 'other standby synced from the shared point');
    for (const s of [a, c]) assert.deepEqual(await seqOf(s, 0), { seq: 31, synced: true, epoch: 2 });
    // Either of them holds everything: promote c, then a, and read back.
    await place(0, 3, 3, c, [a, b]);
    assert.equal(await query(c, 0, 'x'), 31);
    assert.equal(await inc(c, 0, 'x', 'x31'), 32);
    await place(0, 4, 4, a, [b, c]);
    assert.equal(await query(a, 0, 'x'), 32);
    // A message acknowledged two actives ago is still answered from the dedupe table.
    const cl = client(a);
    const dup = await unaryCall(cl.deliver.bind(cl), { app: APP, rs: 0, messageId: 'x5', payload: encodeJson({ key: 'x' }), key: 'x', routeEpoch: 0 });
    assert.equal(dup.duplicate, true);
    assert.equal(decodeJson<{ value: number }>(dup.reply).value, 6);
  });

  test('a standby at another history point gets a snapshot', async () => {
    const [a, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(1, 1, 1, a, [b, c]);
    for (let i = 0; i < 5; i++) await inc(a, 1, 'y', `y${i}`);
    // c leaves the RS's members; a and b go on without it: c stays at (1, 5), b moves on.
    await place(1, 1, 2, a, [b]);
    for (let i = 5; i < 12; i++) await inc(a, 1, 'y', `y${i}`);
    // b becomes active at epoch 2 (its point: epoch 1, seq 12), c comes back as its standby.
    await place(1, 2, 3, b, [a, c]);
    assert.equal(await inc(b, 1, 'y', 'y12'), 13);
    assert.deepEqual(syncs(a, 1, 2), { base: 1, snapshot: 0 });
    assert.deepEqual(syncs(c, 1, 2), { base: 0, snapshot: 1 }, 'behind: not the same point, so a snapshot');
    await place(1, 3, 4, c, [a, b]);
    assert.equal(await query(c, 1, 'y'), 13);
  });

  test('a failover with one standby: the new standby was no member, so it gets the snapshot without an offer first', async () => {
    const [a, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(3, 1, 1, a, [b]);
    for (let i = 0; i < 6; i++) await inc(a, 3, 'w', `w${i}`);
    // a is lost: b (its standby) is promoted, c becomes the new standby.
    await place(3, 2, 2, b, [c]);
    assert.equal(await inc(b, 3, 'w', 'w6'), 7);
    assert.deepEqual(syncs(c, 3, 2), { base: 0, snapshot: 1 });
    // No Replicate was refused for lack of a snapshot: b did not offer its point to c first.
    const refused = (logs.get('c') ?? []).filter((l) => /^Replicate/.test(l.method ?? '') && /NEEDS_SNAPSHOT: counter\/3 /.test(l.details ?? ''));
    assert.equal(refused.length, 0, JSON.stringify(refused));
    // c holds everything: promote it and read back.
    await place(3, 3, 3, c, [b]);
    assert.equal(await query(c, 3, 'w'), 7);
  });

  test('the standby checks the point exactly: another epoch or seq is NEEDS_SNAPSHOT', async () => {
    const [a, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(2, 1, 1, a, [b, c]);
    for (let i = 0; i < 4; i++) await inc(a, 2, 'z', `z${i}`);
    // Only c learns of epoch 2 (b active); a replication from b is sent by hand.
    const m = members(b, [a, c]);
    await setRole(c, 2, Role.ROLE_STANDBY, 2, 2, m);
    const cl = client(c);
    const replicate = (base: { epoch: number; seq: number } | undefined) =>
      unaryCall(cl.replicate.bind(cl), { app: APP, rs: 2, epoch: 2, fromCopyId: 'b', entries: [], base });
    const needsSnapshot = (e: Error): boolean => e instanceof FailedPreconditionError && /NEEDS_SNAPSHOT/.test(e.message);
    await assert.rejects(replicate(undefined), needsSnapshot);
    await assert.rejects(replicate({ epoch: 1, seq: 3 }), needsSnapshot);
    await assert.rejects(replicate({ epoch: 1, seq: 5 }), needsSnapshot);
    await assert.rejects(replicate({ epoch: 2, seq: 4 }), needsSnapshot);
    assert.equal((await seqOf(c, 2)).synced, false, 'refusals change nothing');
    assert.equal(Number((await replicate({ epoch: 1, seq: 4 })).appliedSeq), 4);
    assert.deepEqual(await seqOf(c, 2), { seq: 4, synced: true, epoch: 2 });
    // The real switchover then goes on from there.
    await Promise.all([setRole(b, 2, Role.ROLE_ACTIVE, 2, 2, m), setRole(a, 2, Role.ROLE_STANDBY, 2, 2, m)]);
    assert.equal(await inc(b, 2, 'z', 'z4'), 5);
    await place(2, 3, 3, c, [a, b]);
    assert.equal(await query(c, 2, 'z'), 5);
  });
});
