/**
 * An ACTIVE whose standby hangs (a real copy process under SIGSTOP: its connections stay open,
 * nothing answers) commits with the remaining standby as soon as the controller removes the
 * hung one — it does not wait out the hung call. The active here has a 60 s replication call
 * deadline, so a round stuck on the hung standby would hold the acknowledgement far past this
 * test's own deadline.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { AdsmServiceClient, Role, type Member } from '@understudy/proto';
import { clientChannelOptions, insecureCredentials, silentLogger, unaryCall } from '@understudy/runtime';
import { decodeJson, encodeJson, startCopy, type CopyHandle } from '../src/index';
import { counterApp } from '../../../examples/counter/src/counter';
import { membersOf } from './members';
import { startCounterCopy, type Proc } from '../../../test/harness/processes';

const APP = 'counter';
const NO_CONTROLLER = ['127.0.0.1:1'];
const RS = 3;
/**
 * Bound on the acknowledgement after the hung standby is removed. Without giving up its round
 * the active waits for the call to end: at the 60 s deadline, or when keepalive (5 s pings,
 * 2 s timeout, see clientChannelOptions) drops the connection — at least 5 s either way.
 */
const KEEPALIVE_MARGIN_MS = 4000;

interface Peer {
  readonly copyId: string;
  readonly address: string;
  readonly incarnation: number;
}

let active: CopyHandle;
let standby: CopyHandle;
let hung: Proc;
let hungPeer: Peer;
const clients: AdsmServiceClient[] = [];
const clientOf = (address: string): AdsmServiceClient => {
  const c = new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions());
  clients.push(c);
  return c;
};

before(async () => {
  const opts = { app: counterApp, controllerAddresses: NO_CONTROLLER, logger: silentLogger(), heartbeatIntervalMs: 60_000 };
  active = await startCopy({ ...opts, copyId: 'a', incarnation: 1, replicationCallTimeoutMs: 60_000, deliverTimeoutMs: 60_000 });
  standby = await startCopy({ ...opts, copyId: 'b', incarnation: 1 });
  hung = await startCounterCopy({ copyId: 'h', controllers: NO_CONTROLLER, heartbeatIntervalMs: 60_000 });
  const info = await unaryCall(clientOf(hung.address).getCopyInfo.bind(clientOf(hung.address)), {});
  hungPeer = { copyId: 'h', address: hung.address, incarnation: info.incarnation };
});

after(async () => {
  hung?.signal('SIGCONT');
  await hung?.kill();
  for (const c of clients) c.close();
  await Promise.all([active?.stop(), standby?.stop()]);
});

function members(standbys: readonly Peer[]): Member[] {
  return membersOf(active, standbys);
}

async function setRole(p: Peer, role: Role, epoch: number, version: number, m: Member[]): Promise<void> {
  const c = clientOf(p.address);
  await unaryCall(c.setRoles.bind(c), { copyId: p.copyId, incarnation: p.incarnation, leaderTerm: 1, entries: [{ app: APP, rs: RS, role, epoch, version, members: m }], full: false });
}

async function inc(messageId: string): Promise<number> {
  const c = clientOf(active.address);
  const res = await unaryCall(c.deliver.bind(c), { app: APP, rs: RS, messageId, payload: encodeJson({ key: 'k' }), key: 'k', routeEpoch: 0 }, { deadlineMs: 60_000 });
  return decodeJson<{ value: number }>(res.reply).value;
}

test('a standby that hangs (SIGSTOP) mid-round does not hold the RS once the controller removes it', { timeout: 30_000 }, async () => {
  const b: Peer = standby;
  const both = members([b, hungPeer]);
  await Promise.all([setRole(active, Role.ROLE_ACTIVE, 1, 1, both), setRole(b, Role.ROLE_STANDBY, 1, 1, both), setRole(hungPeer, Role.ROLE_STANDBY, 1, 1, both)]);
  for (let i = 1; i <= 5; i++) assert.equal(await inc(`m${i}`), i, 'replicated to both standbys');

  hung.signal('SIGSTOP');
  // In flight: its round waits on the hung standby (and would, for the 60 s call deadline).
  const pending = inc('m6');
  let settled = false;
  void pending.finally(() => (settled = true)).catch(() => undefined);
  // A few round trips to the active (not synchronisation: the outcome below does not depend on
  // how far the round got) during which no acknowledgement may come: h has not applied m6.
  const c = clientOf(active.address);
  for (let i = 0; i < 20 && !settled; i++) await unaryCall(c.getCopyInfo.bind(c), {});
  assert.equal(settled, false, 'no acknowledgement while a listed standby has not applied the update');

  // The controller fences the hung copy: new epoch, hung copy out of service.
  const fenced = members([b]);
  fenced.push({ copyId: 'h', address: hungPeer.address, role: Role.ROLE_OUT_OF_SERVICE, incarnation: hungPeer.incarnation, catchingUp: false });
  const removedAt = performance.now();
  await Promise.all([setRole(active, Role.ROLE_ACTIVE, 2, 2, fenced), setRole(b, Role.ROLE_STANDBY, 2, 2, fenced)]);
  // Committed with b alone, well before the 60 s call to the hung copy would end. The message
  // was recorded at epoch 1: the client's retry (same id) gets the committed reply.
  const value = await pending.catch(() => inc('m6'));
  assert.equal(value, 6);
  // Before the hung copy's connection could be given up by keepalive (5 s ping + 2 s timeout),
  // which is the only other thing that ends its call early.
  const tookMs = performance.now() - removedAt;
  assert.ok(tookMs < KEEPALIVE_MARGIN_MS, `acknowledged ${tookMs.toFixed(0)} ms after the hung standby was removed`);
  assert.equal(await inc('m7'), 7);

  // The same within an epoch: the hung standby dropped from the list at a higher version.
  const again = members([b, hungPeer]);
  hung.signal('SIGCONT');
  await Promise.all([setRole(active, Role.ROLE_ACTIVE, 3, 3, again), setRole(b, Role.ROLE_STANDBY, 3, 3, again), setRole(hungPeer, Role.ROLE_STANDBY, 3, 3, again)]);
  assert.equal(await inc('m8'), 8, 'the resumed copy caught up as a standby at epoch 3');
  hung.signal('SIGSTOP');
  const pending2 = inc('m9');
  const onlyB = members([b]);
  const removed2At = performance.now();
  await Promise.all([setRole(active, Role.ROLE_ACTIVE, 3, 4, onlyB), setRole(b, Role.ROLE_STANDBY, 3, 4, onlyB)]);
  assert.equal(await pending2, 9);
  const took2Ms = performance.now() - removed2At;
  assert.ok(took2Ms < KEEPALIVE_MARGIN_MS, `acknowledged ${took2Ms.toFixed(0)} ms after the hung standby left the list`);
});
