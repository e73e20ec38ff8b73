/**
 * The data-flow map and upstream backup end to end (R-DFM-1, R-DFM-6, R-CKP-5, R-NF-1, R-NF-4):
 * a controller, a fault manager, (a router,) and two applications as real processes on
 * 127.0.0.1 — `fwd` forwards every message it takes to `sink` along the edge fwd -> sink, `sink`
 * counts per account what reaches it (test/apps/flow.ts). Both DISTRIBUTED_FAULT_TOLERANT with
 * 3 copies, 4 RS, 1 standby per RS.
 *
 * What the tests show:
 * 1. Exactly once through failovers: a load sends messages to `fwd` (each resent with its id
 *    until acknowledged) while the ACTIVE copy of `fwd` is killed (kill -9), then the ACTIVE of
 *    `sink`, then both at once. Afterwards every `sink` total equals the number of messages `fwd`
 *    acknowledged for that account: nothing a sender acknowledged is lost (its outbox entry was
 *    replicated with its update and a new active sends it again), nothing is counted twice (the
 *    receiver dedupes the resends by their deterministic ids, also after its own failover).
 *    Through a router and directly (the copy's own routing library).
 * 2. Bad input: a handler sending to an app without an edge gets the client FAILED_PRECONDITION
 *    ("unknown edge"), a send without the edge's key field INVALID_ARGUMENT ("missing key");
 *    neither changes any state, and good messages keep flowing.
 * 3. An edge change through ApplyTopology reaches the copies: removing the edge makes the next
 *    sends "unknown edge", renaming its key field makes them "missing key", restoring it works.
 *
 * Per-RS order through a failover with sequence-numbered messages on the router path is shown by
 * test/e2e/router.test.ts ("per-RS order through a failover: kill -9 of the active copy mid-stream").
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ControllerClient, RoutingClient } from '@understudy/adsm';
import {
  AdsmServiceClient,
  CopyStatus,
  Mode,
  Partitioning,
  Role,
  RouterServiceClient,
  type AppSpec,
  type Edge,
  type GetStatusResponse,
} from '@understudy/proto';
import { FailedPreconditionError, InvalidArgumentError, insecureCredentials, unaryCall } from '@understudy/runtime';
import { freePort, startControllerProc, startFaultManagerProc, startProcess, startRouterProc, type Proc } from '../harness/processes';
import { waitFor } from '../harness/wait';

const RS = 4;
const EDGE: Edge = { from: 'fwd', to: 'sink', keyField: 'account' };
/** Set FLOW_LOG_DIR to keep every copy's log lines there (debugging). */
const LOG_DIR = process.env.FLOW_LOG_DIR ?? '';

function logTo(name: string): (line: string) => void {
  fs.mkdirSync(LOG_DIR, { recursive: true });
  const out = fs.createWriteStream(path.join(LOG_DIR, `${name}.log`), { flags: 'a' });
  return (line) => out.write(`${line}\n`);
}

function appSpec(name: string): AppSpec {
  return { name, mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: RS, standbys: 1, minCopies: 3, partitioning: Partitioning.PARTITIONING_HASH, rangeStarts: [], detection: DETECTION };
}

/**
 * Crashes are seen at once (the heartbeat stream breaks); a hang only after 10 s: on a loaded
 * 2-core machine a starved copy can miss 600 ms of heartbeats, these tests kill on purpose, and
 * the bounds test stops every sink copy for a moment.
 */
const DETECTION = {
  heartbeatIntervalMs: 200,
  missedHeartbeats: 50,
  maxEventLoopLagMs: 0,
  maxCpuPercent: 0,
  maxRssBytes: 0,
  maxQueueDepth: 0,
  breachSamples: 0,
  probeIntervalMs: 0,
  probeTimeoutMs: 0,
};

/** A running fwd -> sink deployment. */
interface Flow {
  readonly ctl: ControllerClient;
  readonly routing: RoutingClient;
  readonly copies: Map<string, Proc>;
  readonly router: Proc | undefined;
  /** Outbox entries fwd copies sent again as new actives (from their logs). */
  readonly replayed: { n: number };
  status(): Promise<GetStatusResponse>;
  applyEdges(edges: Edge[]): Promise<void>;
  restart(copyId: string): Promise<void>;
  /** Copies whose process ended (killed, or fenced and exited). */
  readonly exited: Set<string>;
  stop(): Promise<void>;
}

async function startFlow(o: { router: boolean; maxOutboxPerRs?: number }): Promise<Flow> {
  const port = await freePort();
  const controllers = [`127.0.0.1:${port}`];
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-flow-'));
  const procs: Proc[] = [];
  const controller = await startControllerProc({ id: 'ctl-flow', port, dataDir, ...(LOG_DIR ? { onLine: logTo(`controller-${o.router ? 'r' : 'd'}`) } : {}) });
  procs.push(controller);
  const ctl = new ControllerClient({ addresses: controllers, callTimeoutMs: 10_000 });
  const applyEdges = async (edges: Edge[]): Promise<void> => {
    await ctl.withLeader((c) => unaryCall(c.applyTopology.bind(c), { topology: { apps: [appSpec('fwd'), appSpec('sink')], edges } }));
  };
  await applyEdges([EDGE]);
  const fm = await startFaultManagerProc({ id: 'fm-flow', controllers, ...(LOG_DIR ? { onLine: logTo(`fm-${o.router ? 'r' : 'd'}`) } : {}) });
  procs.push(fm);
  const router = o.router ? await startRouterProc({ id: 'router-flow', controllers, faultManagers: [fm.address], attemptTimeoutMs: 2000 }) : undefined;
  if (router) procs.push(router);
  const copies = new Map<string, Proc>();
  const replayed = { n: 0 };
  const exited = new Set<string>();
  const startCopy = async (copyId: string): Promise<void> => {
    const app = copyId.startsWith('f') ? 'fwd' : 'sink';
    const keep = LOG_DIR ? logTo(`${copyId}-${o.router ? 'r' : 'd'}`) : undefined;
    const p = await startProcess({
      name: `${app} ${copyId}`,
      script: 'test/apps/flow-copy.ts',
      args: [
        '--copy-id', copyId,
        '--controllers', controllers.join(','),
        '--host', `host-${copyId}`,
        '--heartbeat-interval-ms', '200',
        '--fault-managers', fm.address,
        ...(router ? ['--routers', router.address] : []),
        ...(o.maxOutboxPerRs !== undefined && app === 'fwd' ? ['--max-outbox-per-rs', String(o.maxOutboxPerRs)] : []),
      ],
      // fwd logs at info: the test counts its failover replays.
      env: { FLOW_APP: app, ...(app === 'fwd' ? { LOG_LEVEL: 'info' } : {}) },
      readyMsg: 'copy listening',
      onLine: (line) => {
        keep?.(line);
        const m = /"entries":(\d+)[^}]*"msg":"outbox: sending every held entry \(new active\)"/.exec(line);
        if (m) replayed.n += Number(m[1]);
      },
    });
    copies.set(copyId, p);
    exited.delete(copyId);
    void p.exited.then(() => {
      if (copies.get(copyId) === p) exited.add(copyId);
    });
  };
  await Promise.all(['f1', 'f2', 'f3', 's1', 's2', 's3'].map(startCopy));
  const status = (): Promise<GetStatusResponse> => ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: '', includeAssignments: true }, { deadlineMs: 3000 }), 10_000);
  await waitFor(async () => {
    const s = await status();
    return !s.passive && ['fwd', 'sink'].every((n) => s.apps.find((a) => a.spec?.name === n && a.activated && a.rsWithActive === RS));
  }, { what: 'fwd and sink placed', timeoutMs: 30_000 });
  const routing = new RoutingClient({ controllerAddresses: controllers, deliverDeadlineMs: 20_000 });
  await routing.waitReady('fwd', 15_000);
  await routing.waitReady('sink', 15_000);
  return {
    ctl,
    routing,
    copies,
    router,
    replayed,
    exited,
    status,
    applyEdges,
    restart: startCopy,
    stop: async () => {
      routing.close();
      ctl.close();
      await Promise.all([...copies.values()].map((p) => p.kill()));
      for (const p of procs.reverse()) await p.kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Every copy is UP and holds roles again, and every RS of both apps has an ACTIVE and a caught-up
 * STANDBY on UP copies. (Without the first part a restarted copy may still be catching up on the
 * standby roles balancing just moved to it: killing the active of such an RS then is a double
 * fault, which loses the RS's state by design.)
 */
async function settled(flow: Flow, what: string): Promise<void> {
  await waitFor(async () => {
    // A copy that left by itself (fenced after a spurious hang verdict on a starved machine)
    // comes back like a supervisor would bring it back.
    for (const id of [...flow.exited]) await flow.restart(id);
    const s = await flow.status();
    const up = new Set(s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP && c.activeCount + c.standbyCount > 0).map((c) => c.copyId));
    if ([...flow.copies.keys()].some((id) => !up.has(id))) return false;
    return s.assignments.length === 2 * RS && s.assignments.every((a) => {
      const act = a.members.find((m) => m.role === Role.ROLE_ACTIVE);
      return act && up.has(act.copyId) && a.members.filter((m) => m.role === Role.ROLE_STANDBY && up.has(m.copyId) && !m.catchingUp).length === 1;
    });
  }, { what, timeoutMs: 40_000 });
}

async function activeOf(flow: Flow, app: string, rs: number): Promise<string> {
  const s = await flow.status();
  const id = s.assignments.find((a) => a.app === app && a.rs === rs)?.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId;
  assert.ok(id, `${app}/${rs} has an active copy`);
  return id;
}

/** Outbox entries held per RS on the ACTIVE copies of `fwd` (GetCopyInfo of every live fwd copy). */
async function outboxByRs(flow: Flow): Promise<Map<number, number>> {
  const held = new Map<number, number>();
  for (const [id, p] of flow.copies) {
    if (!id.startsWith('f')) continue;
    const c = new AdsmServiceClient(p.address, insecureCredentials());
    try {
      const info = await unaryCall(c.getCopyInfo.bind(c), {}, { deadlineMs: 3000 });
      for (const r of info.rs) if (r.role === Role.ROLE_ACTIVE) held.set(r.rs, r.outboxEntries);
    } finally {
      c.close();
    }
  }
  return held;
}

async function outboxHeld(flow: Flow): Promise<number> {
  let n = 0;
  for (const v of (await outboxByRs(flow)).values()) n += v;
  return n;
}

/**
 * Sends `{ account }` to fwd from `workers` closed loops. Every message keeps its id until fwd
 * acknowledged it (resent through failovers, back-pressure and timeouts), so each one is
 * acknowledged exactly once and `acked` counts what sink must end up with.
 */
class Load {
  readonly acked = new Map<string, number>();
  /** The accounts this load sends to (its own: sink totals start at 0). */
  readonly accounts: string[];
  /** fwd's count of forwarded messages before this load. */
  forwardedBefore = 0;
  total = 0;
  resends = 0;
  private running = false;
  private loops: Promise<void>[] = [];
  private next = 0;

  constructor(private readonly routing: RoutingClient, private readonly tag: string, private readonly workers = 8) {
    this.accounts = Array.from({ length: 16 }, (_, i) => `${tag}-acct-${i}`);
  }

  async start(): Promise<void> {
    this.forwardedBefore = await forwarded(this.routing);
    this.running = true;
    this.loops = Array.from({ length: this.workers }, () => this.loop());
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** Resolves once `n` more messages were acknowledged. */
  async progress(n: number, what: string): Promise<void> {
    const target = this.total + n;
    await waitFor(() => this.total >= target, { what: `${n} more acknowledged messages ${what}`, timeoutMs: 40_000 });
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const i = this.next++;
      const account = this.accounts[i % this.accounts.length]!;
      const messageId = `${this.tag}-${i}`;
      const giveUpAt = Date.now() + 90_000;
      for (;;) {
        try {
          await this.routing.deliver('fwd', account, { account }, { messageId, deadlineMs: 15_000 });
          break;
        } catch (e) {
          // Anything (no active yet, queue full, deadline): the same id again, never a new one.
          if (e instanceof InvalidArgumentError || Date.now() > giveUpAt) throw e;
          this.resends++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      this.acked.set(account, (this.acked.get(account) ?? 0) + 1);
      this.total++;
    }
  }
}

/** Wait until fwd's outboxes are empty, then every sink total must equal what fwd acknowledged. */
async function assertExactlyOnce(flow: Flow, load: Load): Promise<void> {
  await waitFor(async () => (await outboxHeld(flow)) === 0, { what: "fwd's outboxes drained", timeoutMs: 60_000 });
  const sums = await Promise.all(load.accounts.map((a) => flow.routing.query<number>('sink', flow.routing.rsForKey('sink', a), { account: a })));
  const got = new Map(load.accounts.map((a, i) => [a, sums[i]!]));
  const want = new Map(load.accounts.map((a) => [a, load.acked.get(a) ?? 0]));
  assert.deepEqual(got, want, 'sink totals must equal the messages fwd acknowledged, per account');
  // fwd applied each acknowledged message once too (its own dedupe).
  assert.equal((await forwarded(flow.routing)) - load.forwardedBefore, load.total, "fwd's own count grew by the messages it acknowledged");
}

/** fwd's count of messages it forwarded, over all its RS. */
async function forwarded(routing: RoutingClient): Promise<number> {
  let n = 0;
  for (let rs = 0; rs < RS; rs++) n += await routing.query<number>('fwd', rs, {});
  return n;
}

/** Kill the copies, keep the load running until it made progress without them, restart them. */
async function killDuringLoad(flow: Flow, load: Load, victims: string[], what: string): Promise<void> {
  await Promise.all(victims.map((v) => flow.copies.get(v)!.kill()));
  await load.progress(150, `after killing ${victims.join(' and ')} (${what})`);
  await Promise.all(victims.map((v) => flow.restart(v)));
  await settled(flow, `settled after ${what}`);
}

// ------------------------------------------------------------------------------- router path

describe('data flow fwd -> sink through a router', () => {
  let flow: Flow;

  before(async () => {
    flow = await startFlow({ router: true });
  });

  after(async () => {
    await flow?.stop();
  });

  test('exactly once through kill -9 of the sender\'s active, the receiver\'s active, and both together', async (t) => {
    const load = new Load(flow.routing, 'r');
    await load.start();
    try {
      await load.progress(300, 'before any fault');
      const fwdVictim = await activeOf(flow, 'fwd', flow.routing.rsForKey('fwd', load.accounts[0]!));
      await killDuringLoad(flow, load, [fwdVictim], "fwd's active");
      const sinkVictim = await activeOf(flow, 'sink', flow.routing.rsForKey('sink', load.accounts[1]!));
      await killDuringLoad(flow, load, [sinkVictim], "sink's active");
      const both = [await activeOf(flow, 'fwd', 1), await activeOf(flow, 'sink', 2)];
      await killDuringLoad(flow, load, both, 'both actives together');
      await load.progress(200, 'after the last fault');
    } finally {
      await load.stop();
    }
    await assertExactlyOnce(flow, load);
    t.diagnostic(`${load.total} messages acknowledged by fwd (${load.resends} client resends); ${flow.replayed.n} outbox entries resent by new fwd actives`);
    assert.ok(flow.replayed.n > 0, 'new fwd actives resent outbox entries they inherited (the replay path ran)');
  });

  test('bad input: unknown edge and missing key get specific statuses; nothing else is disturbed', async () => {
    const account = 'bad-input';
    const rs = flow.routing.rsForKey('fwd', account);
    const before = await flow.routing.query<number>('fwd', rs, {});
    await assert.rejects(
      flow.routing.deliver('fwd', account, { account, to: 'fwd' }),
      (e: Error) => e instanceof FailedPreconditionError && /unknown edge/.test(e.message) && /no edge fwd -> fwd/.test(e.message) && /edges from fwd: sink/.test(e.message),
    );
    await assert.rejects(flow.routing.deliver('fwd', account, { account, to: 'nowhere' }), (e: Error) => e instanceof FailedPreconditionError && /fwd -> nowhere/.test(e.message));
    await assert.rejects(
      flow.routing.deliver('fwd', account, { account, noKey: true }),
      (e: Error) => e instanceof InvalidArgumentError && /missing key/.test(e.message) && /"account"/.test(e.message),
    );
    // Through the router the same refusal arrives as its gRPC status.
    const rc = new RouterServiceClient(flow.router!.address, insecureCredentials());
    try {
      const code = await new Promise<grpc.status>((resolve) =>
        rc.send(
          { app: 'fwd', key: account, rs: 0, hasRs: false, messageId: 'bad-edge-via-router', payload: Buffer.from(JSON.stringify({ account, to: 'fwd' })), deadlineMs: 10_000 },
          (err) => resolve(err ? err.code : grpc.status.OK),
        ),
      );
      assert.equal(code, grpc.status.FAILED_PRECONDITION);
    } finally {
      rc.close();
    }
    assert.equal(await flow.routing.query<number>('fwd', rs, {}), before, 'refused messages change no state');
    await flow.routing.deliver('fwd', account, { account });
    await waitFor(async () => (await flow.routing.query<number>('sink', flow.routing.rsForKey('sink', account), { account })) === 1, { what: 'the good message reached sink once' });
  });

  test('an edge change through ApplyTopology reaches the copies (R-DFM-6)', async () => {
    const account = 'edge-change';
    let delivered = 0;
    let n = 0;
    /** Send one message; resolves with the error class name, or 'ok'. */
    const attempt = async (): Promise<string> => {
      try {
        await flow.routing.deliver('fwd', account, { account }, { messageId: `edge-${n++}`, deadlineMs: 10_000 });
        delivered++;
        return 'ok';
      } catch (e) {
        return `${(e as Error).constructor.name}: ${(e as Error).message}`;
      }
    };
    await flow.applyEdges([]);
    await waitFor(async () => /FailedPreconditionError: unknown edge/.test(await attempt()), { what: 'the removed edge reached the fwd copies', timeoutMs: 15_000 });
    await flow.applyEdges([{ ...EDGE, keyField: 'subscriber' }]);
    await waitFor(async () => /InvalidArgumentError: .*missing key.*"subscriber"/.test(await attempt()), { what: 'the new key field reached the fwd copies', timeoutMs: 15_000 });
    await flow.applyEdges([EDGE]);
    await waitFor(async () => (await attempt()) === 'ok', { what: 'the restored edge reached the fwd copies', timeoutMs: 15_000 });
    await waitFor(async () => (await flow.routing.query<number>('sink', flow.routing.rsForKey('sink', account), { account })) === delivered, {
      what: `sink counted exactly the ${delivered} accepted messages`,
    });
  });
});

// ------------------------------------------------------------------------------- direct path

describe('data flow fwd -> sink directly (no router)', () => {
  let flow: Flow;
  const MAX_OUTBOX = 50;

  before(async () => {
    flow = await startFlow({ router: false, maxOutboxPerRs: MAX_OUTBOX });
  });

  after(async () => {
    await flow?.stop();
  });

  test('exactly once through kill -9 of the sender\'s and the receiver\'s actives together', async (t) => {
    const load = new Load(flow.routing, 'd');
    await load.start();
    try {
      await load.progress(300, 'before any fault');
      const both = [await activeOf(flow, 'fwd', 0), await activeOf(flow, 'sink', 0)];
      await killDuringLoad(flow, load, both, 'both actives together');
      await load.progress(200, 'after the fault');
    } finally {
      await load.stop();
    }
    await assertExactlyOnce(flow, load);
    t.diagnostic(`${load.total} messages acknowledged by fwd (${load.resends} client resends); ${flow.replayed.n} outbox entries resent by new fwd actives`);
  });

  test('bounds: with every sink copy stopped, fwd outboxes stay within --max-outbox-per-rs and fwd stops taking input; all arrives once when sink is back', async (t) => {
    const load = new Load(flow.routing, 'b');
    await load.start();
    const sinks = [...flow.copies.keys()].filter((id) => id.startsWith('s'));
    let stopped = false;
    try {
      await load.progress(100, 'before stopping sink');
      for (const id of sinks) flow.copies.get(id)!.signal('SIGSTOP');
      stopped = true;
      // Back-pressure: some RS fills its outbox and takes no more input; none goes past the bound.
      const full = await waitFor(async () => {
        const held = await outboxByRs(flow);
        for (const v of held.values()) assert.ok(v <= MAX_OUTBOX, `an outbox holds ${v} entries, over the bound ${MAX_OUTBOX}`);
        return [...held.values()].some((v) => v === MAX_OUTBOX) && held;
      }, { what: `an fwd outbox reaching ${MAX_OUTBOX} entries`, timeoutMs: 6000 });
      const totalWhenFull = load.total;
      const heldTotal = [...full.values()].reduce((a, b) => a + b, 0);
      // While sink is stopped fwd acknowledges only what its outboxes can hold.
      await new Promise((r) => setTimeout(r, 500)); // a fixed observation window, not a synchronisation
      const held = await outboxByRs(flow);
      for (const v of held.values()) assert.ok(v <= MAX_OUTBOX, `an outbox holds ${v} entries, over the bound ${MAX_OUTBOX}`);
      t.diagnostic(`outboxes at the bound: ${JSON.stringify(Object.fromEntries(held))}; acknowledged ${totalWhenFull} -> ${load.total} meanwhile (${heldTotal} held when the first filled up)`);
      assert.ok(load.total - totalWhenFull <= 4 * MAX_OUTBOX, 'fwd acknowledges no more than its outboxes can hold while sink is stopped');
      for (const id of sinks) flow.copies.get(id)!.signal('SIGCONT');
      stopped = false;
      await load.progress(200, 'after sink came back');
    } finally {
      if (stopped) for (const id of sinks) flow.copies.get(id)!.signal('SIGCONT');
      await load.stop();
    }
    await assertExactlyOnce(flow, load);
  });
});
