/**
 * The Fault Manager end to end: a real controller process (embedded store), a real fault
 * manager process, and test "copies" that attach over real gRPC streams from this process
 * (registered with the controller first, so fault reports name known copies). One real counter
 * copy process checks the copy side (FaultManagerLink) and the reachable ReportUnreachable case.
 *
 * Applications (declared with short detection policies):
 * - fmtest:  heartbeat 50 ms × 3 missed, queue depth > 100 for 3 samples = unhealthy (the hang
 *            and unhealthy cases).
 * - fmcalm:  heartbeat 50 ms × 40 missed: copies that must stay up while this (loaded) test
 *            process drives their heartbeats.
 * - fmprobe: heartbeat 50 ms × 20 missed (hang only after 1 s), probe every 100 ms, timeout 250 ms.
 * - counter: heartbeat 100 ms × 10 missed (a real process on a loaded box must never look hung).
 * Every app needs far more copies than the test registers (minCopies), so none is ever
 * activated: the controller places nothing and only the copies' status changes.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  AdsmServiceService,
  CopyStatus,
  FaultKind,
  FaultManagerServiceClient,
  FaultManagerServiceService,
  FaultOutcome,
  Mode,
  Partitioning,
  type AttachHello,
  type AttachRequest,
  type AttachResponse,
  type AttachSettings,
  type DetectionPolicy,
  type Health,
  type ListWatchedResponse,
  type ProbeRequest,
  type ReportUnreachableResponse,
} from '@understudy/proto';
import { ControllerClient } from '@understudy/adsm';
import { unaryCall } from '@understudy/runtime';
import { freePort, startControllerProc, startFaultManagerProc, startProcess, type Proc } from '../../../test/harness/processes';
import { waitFor } from '../../../test/harness/wait';

const OK_HEALTH: Health = { eventLoopLagMs: 1, cpuPercent: 3, rssBytes: 60_000_000, handledCount: 0, queueDepth: 0, heapUsedBytes: 30_000_000 };

function policy(p: Partial<DetectionPolicy>): DetectionPolicy {
  return {
    heartbeatIntervalMs: 0,
    missedHeartbeats: 0,
    maxEventLoopLagMs: 0,
    maxCpuPercent: 0,
    maxRssBytes: 0,
    maxQueueDepth: 0,
    breachSamples: 0,
    probeIntervalMs: 0,
    probeTimeoutMs: 0,
    ...p,
  };
}

/** Outcome of one call: status code and details, or the response. */
interface Outcome<T> {
  readonly code: grpc.status;
  readonly details: string;
  readonly res?: T;
}

function callFm<Req, Res>(client: FaultManagerServiceClient, method: 'reportUnreachable' | 'listWatched', req: Req): Promise<Outcome<Res>> {
  return new Promise((resolve) => {
    const fn = (client[method] as unknown as (r: Req, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Res) => void) => void).bind(client);
    fn(req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, res) => resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '', res }));
  });
}

/** A test copy: one Attach stream driven by hand. */
class FakeCopy {
  readonly settings: AttachSettings[] = [];
  readonly probes: ProbeRequest[] = [];
  readonly stream: grpc.ClientDuplexStream<AttachRequest, AttachResponse>;
  error: grpc.ServiceError | undefined;
  health: Health = OK_HEALTH;
  /** How probes are answered. */
  probeMode: 'ok' | 'fail' | 'ignore' = 'ok';
  answered = 0;
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;

  constructor(client: FaultManagerServiceClient, readonly hello: AttachHello) {
    this.stream = client.attach();
    this.stream.on('data', (m: AttachResponse) => {
      if (m.settings) this.settings.push(m.settings);
      if (m.probe) {
        this.probes.push(m.probe);
        if (this.probeMode !== 'ignore') {
          this.answered++;
          this.send({ probeResult: { probeId: m.probe.probeId, ok: this.probeMode === 'ok', error: this.probeMode === 'ok' ? '' : 'handler refused the probe' } });
        }
      }
    });
    this.stream.on('error', (e: grpc.ServiceError) => {
      this.error = e;
      this.stopBeats();
    });
  }

  send(m: AttachRequest): void {
    if (!this.stream.writableEnded && !this.error) this.stream.write(m);
  }

  attach(): this {
    this.send({ hello: this.hello });
    return this;
  }

  beat(health: Health = this.health): void {
    this.send({ heartbeat: { seq: ++this.seq, health } });
  }

  startBeats(ms = 50): this {
    this.beat();
    this.timer = setInterval(() => this.beat(), ms);
    return this;
  }

  stopBeats(): void {
    clearInterval(this.timer);
  }

  cancel(): void {
    this.stopBeats();
    this.stream.cancel();
  }
}

interface LogLine {
  msg?: string;
  kind?: string;
  copy?: string;
  copies?: string[];
  outcomes?: string[];
  host?: string;
  [k: string]: unknown;
}

/** An `onLine` for a process that logs JSON: parsed lines go into `into`, others are skipped. */
function collectLogLines(into: LogLine[]): (line: string) => void {
  return (l) => {
    if (!l.startsWith('{')) return;
    try {
      into.push(JSON.parse(l) as LogLine);
    } catch {
      // not a log line
    }
  };
}

describe('fault manager (real controller + fault manager processes)', () => {
  let dataDir: string;
  let controller: Proc;
  let fmProc: Proc;
  let counterCopy: Proc | undefined;
  let ctl: ControllerClient;
  let fm: FaultManagerServiceClient;
  let standin: grpc.Server;
  let standinAddress: string;
  const fmLines: LogLine[] = [];
  const copies: FakeCopy[] = [];
  let incarnation = Date.now();

  const status = async (copyId: string): Promise<CopyStatus | undefined> => {
    const s = await ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: '', includeAssignments: false }, { deadlineMs: 3000 }));
    return s.copies.find((c) => c.copyId === copyId)?.status;
  };
  const register = async (copyId: string, app: string, host: string, address = standinAddress): Promise<AttachHello> => {
    const inc = ++incarnation;
    await ctl.withLeader((c) => unaryCall(c.registerCopy.bind(c), { copyId, app, host, address, incarnation: inc }));
    return { copyId, incarnation: inc, app, host, address };
  };
  const fake = (hello: AttachHello): FakeCopy => {
    const c = new FakeCopy(fm, hello);
    copies.push(c);
    return c;
  };
  /** Wait until the controller shows the copy OUT_OF_SERVICE; returns the time it took. */
  const outOfService = async (copyId: string, since: number): Promise<number> => {
    await waitFor(async () => (await status(copyId)) === CopyStatus.COPY_STATUS_OUT_OF_SERVICE, { what: `${copyId} OUT_OF_SERVICE`, timeoutMs: 10_000, intervalMs: 10 });
    return Date.now() - since;
  };
  const detected = (copyId: string): LogLine[] => fmLines.filter((l) => l.msg === 'fault detected' && l.copy === copyId);
  const reported = (pred: (l: LogLine) => boolean): Promise<LogLine> =>
    waitFor(() => fmLines.find((l) => l.msg === 'fault reported' && pred(l)), { what: 'a fault reported log line' });
  const watched = async (): Promise<ListWatchedResponse> => {
    const o = await callFm<object, ListWatchedResponse>(fm, 'listWatched', {});
    assert.equal(o.code, grpc.status.OK, o.details);
    return o.res!;
  };

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-fm-'));
    // The stand-in ADSM service every fake copy "lives" at: accepts the controller's calls.
    standin = new grpc.Server();
    const unimplemented = (_call: unknown, cb: grpc.sendUnaryData<unknown>): void => cb({ code: grpc.status.UNIMPLEMENTED, details: 'stand-in' });
    const impl: Record<string, grpc.handleUnaryCall<unknown, unknown>> = {};
    for (const m of Object.keys(AdsmServiceService)) impl[m] = unimplemented;
    impl.setRoles = (_c, cb) => cb(null, { applied: 0, ignoredStale: 0 });
    impl.shutdown = (_c, cb) => cb(null, {});
    impl.getCopyInfo = (_c, cb) => cb(null, { copyId: 'standin', app: 'none', incarnation: 1, rs: [], health: OK_HEALTH });
    standin.addService(AdsmServiceService, impl as grpc.UntypedServiceImplementation);
    const standinPort = await new Promise<number>((res, rej) => standin.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    standinAddress = `127.0.0.1:${standinPort}`;

    const ctlPort = await freePort();
    controller = await startControllerProc({ id: 'ctl-fm', port: ctlPort, dataDir, passiveTimeoutMs: 300 });
    ctl = new ControllerClient({ addresses: [controller.address], callTimeoutMs: 10_000 });
    const app = (name: string, detection: DetectionPolicy) => ({
      name, mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: 2, standbys: 1, minCopies: 1000, partitioning: Partitioning.PARTITIONING_HASH, detection, rangeStarts: [],
    });
    await ctl.withLeader((c) =>
      unaryCall(c.applyTopology.bind(c), {
        topology: {
          apps: [
            app('fmtest', policy({ heartbeatIntervalMs: 50, missedHeartbeats: 3, maxQueueDepth: 100, breachSamples: 3 })),
            app('fmcalm', policy({ heartbeatIntervalMs: 50, missedHeartbeats: 40 })),
            app('fmprobe', policy({ heartbeatIntervalMs: 50, missedHeartbeats: 20, probeIntervalMs: 100, probeTimeoutMs: 250 })),
            app('counter', policy({ heartbeatIntervalMs: 100, missedHeartbeats: 10 })),
          ],
          edges: [],
        },
      }),
    );
    fmProc = await startFaultManagerProc({
      id: 'fm-test-1',
      controllers: [controller.address],
      logLevel: 'info',
      onLine: collectLogLines(fmLines),
    });
    fm = new FaultManagerServiceClient(fmProc.address, grpc.credentials.createInsecure());
  });

  after(async () => {
    for (const c of copies) c.cancel();
    fm?.close();
    ctl?.close();
    await counterCopy?.kill();
    await fmProc?.kill();
    await controller?.kill();
    standin?.forceShutdown();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('attach: settings carry the FM id and the app heartbeat interval; ListWatched shows the copy and its health', async () => {
    const c = fake(await register('fc-list', 'fmcalm', 'host-list')).attach().startBeats(40);
    await waitFor(() => c.settings.length > 0, { what: 'settings' });
    assert.deepEqual(c.settings[0], { faultManagerId: 'fm-test-1', heartbeatIntervalMs: 50 });
    c.health = { ...OK_HEALTH, handledCount: 42 };
    const w = await waitFor(async () => (await watched()).copies.find((x) => x.copyId === 'fc-list' && x.health?.handledCount === 42), { what: 'watched copy with health' });
    assert.equal(w.incarnation, c.hello.incarnation);
    assert.equal(w.app, 'fmcalm');
    assert.equal(w.host, 'host-list');
    assert.equal(w.address, standinAddress);
    assert.ok(Math.abs(w.lastHeartbeatUnixMs - Date.now()) < 5000, `last heartbeat ${w.lastHeartbeatUnixMs} is recent`);
    assert.equal(w.breaches, 0);
    assert.equal((await watched()).faultManagerId, 'fm-test-1');
    assert.equal(await status('fc-list'), CopyStatus.COPY_STATUS_UP);
  });

  test('stream cancelled → CRASH → the controller shows the copy OUT_OF_SERVICE quickly', async () => {
    const c = fake(await register('fc-crash', 'fmcalm', 'host-crash')).attach().startBeats(40);
    await waitFor(() => c.settings.length > 0, { what: 'settings' });
    const t0 = Date.now();
    c.cancel();
    const ms = await outOfService('fc-crash', t0);
    assert.ok(ms < 5000, `failover took ${ms} ms`);
    assert.deepEqual(detected('fc-crash').map((l) => l.kind), ['CRASH']);
    const r = await reported((l) => l.kind === 'CRASH' && (l.copies ?? []).includes(`fc-crash#${c.hello.incarnation}`));
    assert.deepEqual(r.outcomes, ['fc-crash:FAILED_OVER']);
  });

  test('heartbeats stop while the stream stays open → HANG', async () => {
    const c = fake(await register('fc-hang', 'fmtest', 'host-hang')).attach().startBeats(40);
    await waitFor(() => c.settings.length > 0, { what: 'settings' });
    const t0 = Date.now();
    c.stopBeats();
    await outOfService('fc-hang', t0);
    assert.deepEqual(detected('fc-hang').map((l) => l.kind), ['HANG']);
    assert.equal(c.error, undefined, 'the fault manager does not close a hung copy\'s stream');
  });

  test('a hang is declared at its deadline, not at the next periodic sweep (backstop sweep set to 10 s)', async () => {
    const slowLines: LogLine[] = [];
    const slowFm = await startFaultManagerProc({
      id: 'fm-test-deadline',
      controllers: [controller.address],
      sweepIntervalMs: 10_000,
      logLevel: 'info',
      onLine: collectLogLines(slowLines),
    });
    const client = new FaultManagerServiceClient(slowFm.address, grpc.credentials.createInsecure());
    try {
      const c = new FakeCopy(client, await register('fc-deadline', 'fmtest', 'host-deadline'));
      copies.push(c);
      c.attach().startBeats(40);
      await waitFor(() => c.settings.length > 0, { what: 'settings' });
      const t0 = Date.now();
      c.stopBeats();
      // 3 × 50 ms of silence makes the hang; the backstop sweep runs every 10 s, so only the
      // deadline timer can find it within the 5 s allowed here (generous for a loaded box).
      const ms = await outOfService('fc-deadline', t0);
      const d = slowLines.filter((l) => l.msg === 'fault detected' && l.copy === 'fc-deadline');
      assert.deepEqual(d.map((l) => l.kind), ['HANG'], `detected after ${ms} ms`);
      assert.ok(ms < 5000, `hang handled ${ms} ms after the heartbeats stopped`);
    } finally {
      client.close();
      await slowFm.kill();
    }
  });

  test('threshold breached for breachSamples heartbeats in a row → UNHEALTHY', async () => {
    const c = fake(await register('fc-unhealthy', 'fmtest', 'host-unhealthy')).attach();
    const hot = { ...OK_HEALTH, queueDepth: 500 };
    c.beat(hot);
    c.beat(hot);
    c.beat(OK_HEALTH); // resets the count
    c.beat(hot);
    c.beat(hot);
    const t0 = Date.now();
    c.beat(hot);
    c.startBeats(40);
    await outOfService('fc-unhealthy', t0);
    const d = detected('fc-unhealthy');
    assert.deepEqual(d.map((l) => l.kind), ['UNHEALTHY']);
    assert.match(String(d[0]!.detail), /3 samples in a row over threshold: queue depth 500 > 100/);
  });

  test('probes: answered ok → still watched; unanswered → PROBE_TIMEOUT; answered ok=false → PROBE_TIMEOUT', async () => {
    const good = fake(await register('fp-good', 'fmprobe', 'host-pg')).attach().startBeats(40);
    const silent = fake(await register('fp-silent', 'fmprobe', 'host-ps')).attach().startBeats(40);
    silent.probeMode = 'ignore';
    const t0 = Date.now();
    await outOfService('fp-silent', t0);
    assert.deepEqual(detected('fp-silent').map((l) => l.kind), ['PROBE_TIMEOUT']);
    assert.ok(silent.probes.length >= 1 && silent.probes[0]!.deadlineMs === 250, 'the probe carries the policy timeout');
    await waitFor(() => good.answered >= 4, { what: '4 probes answered' });
    assert.equal(await status('fp-good'), CopyStatus.COPY_STATUS_UP);
    assert.deepEqual(detected('fp-good'), []);
    assert.ok((await watched()).copies.some((x) => x.copyId === 'fp-good'));
    good.probeMode = 'fail';
    const t1 = Date.now();
    await outOfService('fp-good', t1);
    const d = detected('fp-good');
    assert.deepEqual(d.map((l) => l.kind), ['PROBE_TIMEOUT']);
    assert.match(String(d[0]!.detail), /handler refused the probe/);
  });

  test('every copy of one host lost → copy reports plus one HOST report; repeated reports are DUPLICATE', async () => {
    const a = fake(await register('fh-a', 'fmcalm', 'host-shared')).attach().startBeats(40);
    const b = fake(await register('fh-b', 'fmcalm', 'host-shared')).attach().startBeats(40);
    await waitFor(() => a.settings.length > 0 && b.settings.length > 0, { what: 'settings' });
    a.cancel();
    await outOfService('fh-a', Date.now());
    b.cancel();
    await outOfService('fh-b', Date.now());
    const host = await reported((l) => l.kind === 'HOST');
    assert.equal(host.host, 'host-shared');
    assert.deepEqual(host.copies, [`fh-a#${a.hello.incarnation}`, `fh-b#${b.hello.incarnation}`]);
    // fh-a was failed before the HOST report: the controller did nothing more for it.
    assert.ok(host.outcomes!.includes('fh-a:DUPLICATE'), `outcomes ${JSON.stringify(host.outcomes)}`);
    // A second report of the same incarnation (another fault manager, a retry) is a no-op.
    const again = await ctl.withLeader((c) =>
      unaryCall(c.reportFault.bind(c), { kind: FaultKind.FAULT_KIND_CRASH, copies: [{ copyId: 'fh-b', incarnation: b.hello.incarnation }], host: '', detail: 'test', reporter: 'test', fromCopyId: '' }),
    );
    assert.deepEqual(again.results.map((r) => r.outcome), [FaultOutcome.FAULT_OUTCOME_DUPLICATE]);
  });

  test('a newer incarnation replaces the older stream; the older one cannot attach again', async () => {
    const old = fake(await register('fc-inc', 'fmcalm', 'host-inc')).attach().startBeats(40);
    await waitFor(() => old.settings.length > 0, { what: 'settings' });
    const newer = fake(await register('fc-inc', 'fmcalm', 'host-inc')).attach().startBeats(40);
    await waitFor(() => old.error, { what: 'old stream ended' });
    assert.equal(old.error!.code, grpc.status.FAILED_PRECONDITION);
    assert.match(old.error!.details, /attached again .* replaced/);
    await waitFor(async () => (await watched()).copies.find((x) => x.copyId === 'fc-inc')?.incarnation === newer.hello.incarnation, { what: 'newer watched' });
    const stale = fake(old.hello).attach();
    await waitFor(() => stale.error, { what: 'stale attach refused' });
    assert.equal(stale.error!.code, grpc.status.FAILED_PRECONDITION);
    assert.match(stale.error!.details, /is stale: incarnation \d+ is attached/);
    assert.deepEqual(detected('fc-inc'), [], 'replacing or refusing a stream is not a crash');
    assert.equal(await status('fc-inc'), CopyStatus.COPY_STATUS_UP);
  });

  test('ReportUnreachable: a real copy that answers → LINK (not failed); its SIGKILL → CRASH', async () => {
    counterCopy = await startProcess({
      name: 'copy rc1',
      script: 'examples/counter/src/copy.ts',
      args: ['--copy-id', 'rc1', '--controllers', controller.address, '--host', 'host-rc1', '--fault-managers', fmProc.address, '--heartbeat-interval-ms', '200'],
      readyMsg: 'copy listening',
    });
    const w = await waitFor(async () => (await watched()).copies.find((x) => x.copyId === 'rc1' && x.health !== undefined), { what: 'rc1 attached to the fault manager', timeoutMs: 20_000 });
    assert.equal(w.address, counterCopy.address);
    const o = await callFm<object, ReportUnreachableResponse>(fm, 'reportUnreachable', { reporter: 'router-test', copyId: 'rc1', incarnation: w.incarnation, address: '', detail: 'connect timeout' });
    assert.equal(o.code, grpc.status.OK, o.details);
    assert.equal(o.res!.verdict, FaultKind.FAULT_KIND_LINK);
    assert.match(o.res!.detail, /answers as rc1 incarnation/);
    const link = await reported((l) => l.kind === 'LINK' && (l.copies ?? []).includes(`rc1#${w.incarnation}`));
    assert.deepEqual(link.outcomes, ['rc1:RECORDED']);
    assert.equal(await status('rc1'), CopyStatus.COPY_STATUS_UP, 'a link fault does not fail the copy');
    const t0 = Date.now();
    counterCopy.signal('SIGKILL');
    await outOfService('rc1', t0);
    assert.deepEqual(detected('rc1').map((l) => l.kind), ['CRASH']);
  });

  test('ReportUnreachable: a copy that does not answer → CRASH verdict, reported once', async () => {
    const deadPort = await freePort();
    const hello = await register('fc-gone', 'fmcalm', 'host-gone');
    const c = fake({ ...hello, address: `127.0.0.1:${deadPort}` }).attach().startBeats(40);
    await waitFor(() => c.settings.length > 0, { what: 'settings' });
    const o = await callFm<object, ReportUnreachableResponse>(fm, 'reportUnreachable', { reporter: 'router-test', copyId: 'fc-gone', incarnation: hello.incarnation, address: '', detail: '' });
    assert.equal(o.code, grpc.status.OK, o.details);
    assert.equal(o.res!.verdict, FaultKind.FAULT_KIND_CRASH);
    assert.match(o.res!.detail, /did not answer GetCopyInfo within 300 ms/);
    await outOfService('fc-gone', Date.now());
    // The copy's stream then breaks too: no second report for the same incarnation.
    c.cancel();
    const again = await callFm<object, ReportUnreachableResponse>(fm, 'reportUnreachable', { reporter: 'x', copyId: 'fc-gone', incarnation: hello.incarnation, address: '', detail: '' });
    assert.equal(again.res?.verdict, FaultKind.FAULT_KIND_CRASH);
    await reported((l) => (l.copies ?? []).includes(`fc-gone#${hello.incarnation}`));
    assert.deepEqual(detected('fc-gone').map((l) => l.kind), ['CRASH'], 'one verdict, whatever said it first');
    const crashes = fmLines.filter((l) => l.msg === 'fault reported' && (l.copies ?? []).includes(`fc-gone#${hello.incarnation}`));
    assert.equal(crashes.length, 1, 'reported once');
  });

  test('bad input on Attach gets a specific status; the service stays up', async () => {
    const open = (first: AttachRequest): FakeCopy => {
      const c = fake({ copyId: 'x', incarnation: 1, app: 'fmtest', host: 'h', address: '127.0.0.1:1' });
      c.send(first);
      return c;
    };
    const hello = { copyId: 'fc-bad', incarnation: 7, app: 'fmtest', host: 'h-bad', address: '127.0.0.1:1' };
    const cases: [AttachRequest, grpc.status, RegExp][] = [
      [{ heartbeat: { seq: 1, health: OK_HEALTH } }, grpc.status.FAILED_PRECONDITION, /first message of an Attach stream must be hello \(got heartbeat\)/],
      [{ probeResult: { probeId: 1, ok: true, error: '' } }, grpc.status.FAILED_PRECONDITION, /must be hello \(got probe_result\)/],
      [{}, grpc.status.FAILED_PRECONDITION, /must be hello \(got an empty message\)/],
      [{ hello: { ...hello, copyId: '-bad id' } }, grpc.status.INVALID_ARGUMENT, /copy_id must match/],
      [{ hello: { ...hello, incarnation: 0 } }, grpc.status.INVALID_ARGUMENT, /incarnation must be > 0/],
      [{ hello: { ...hello, app: '' } }, grpc.status.INVALID_ARGUMENT, /app is required/],
      [{ hello: { ...hello, host: '' } }, grpc.status.INVALID_ARGUMENT, /host is required/],
      [{ hello: { ...hello, address: 'nowhere' } }, grpc.status.INVALID_ARGUMENT, /address must be host:port/],
    ];
    const streams = cases.map(([m]) => open(m));
    for (const [i, [, code, re]] of cases.entries()) {
      const c = streams[i]!;
      await waitFor(() => c.error, { what: `case ${i} ended` });
      assert.equal(c.error!.code, code, `case ${i}: ${c.error!.details}`);
      assert.match(c.error!.details, re);
    }
    // hello twice on one stream.
    const twice = fake(await register('fc-twice', 'fmcalm', 'host-twice')).attach();
    await waitFor(() => twice.settings.length > 0, { what: 'settings' });
    twice.attach();
    await waitFor(() => twice.error, { what: 'second hello refused' });
    assert.equal(twice.error!.code, grpc.status.FAILED_PRECONDITION);
    assert.match(twice.error!.details, /hello was already sent/);
    // A stream this side ended is forgotten (the copy attaches again, maybe elsewhere): no hang report later.
    await waitFor(async () => !(await watched()).copies.some((x) => x.copyId === 'fc-twice'), { what: 'fc-twice forgotten' });
    // Garbage bytes through a raw bidi stream.
    const garbage = await rawAttach(fmProc.address, [Buffer.from([0x0f]), Buffer.from([0xff, 0xff, 0xff])]);
    assert.equal(garbage.code, grpc.status.INVALID_ARGUMENT, garbage.details);
    assert.match(garbage.details, /malformed Attach message/);
    assert.equal(fmProc.child.exitCode, null);
    await watched();
  });

  test('bad input on ReportUnreachable and ListWatched gets a specific status; the service stays up', async () => {
    const live = fake(await register('fc-ru', 'fmcalm', 'host-ru')).attach().startBeats(40);
    await waitFor(() => live.settings.length > 0, { what: 'settings' });
    const base = { reporter: 'r', copyId: 'fc-ru', incarnation: live.hello.incarnation, address: '', detail: '' };
    const cases: [object, grpc.status, RegExp][] = [
      [{ ...base, copyId: '' }, grpc.status.INVALID_ARGUMENT, /copy_id must match/],
      [{ ...base, copyId: 'bad/id' }, grpc.status.INVALID_ARGUMENT, /copy_id must match/],
      [{ ...base, incarnation: 0 }, grpc.status.INVALID_ARGUMENT, /incarnation must be a positive integer/],
      [{ ...base, address: 'no-port' }, grpc.status.INVALID_ARGUMENT, /address must be host:port/],
      [{ ...base, copyId: 'never-seen' }, grpc.status.NOT_FOUND, /not watched by this fault manager; pass its address/],
      [{ ...base, incarnation: live.hello.incarnation - 1 }, grpc.status.FAILED_PRECONDITION, /is stale: incarnation \d+ is attached here/],
    ];
    for (const [i, [req, code, re]] of cases.entries()) {
      const o = await callFm<object, ReportUnreachableResponse>(fm, 'reportUnreachable', req);
      assert.equal(o.code, code, `case ${i}: ${o.details}`);
      assert.match(o.details, re, `case ${i}`);
    }
    for (const method of ['ReportUnreachable', 'ListWatched'] as const) {
      const o = await rawUnary(fmProc.address, method, Buffer.from([0x0f]));
      assert.equal(o.code, grpc.status.INVALID_ARGUMENT, `${method}: ${o.details}`);
      assert.match(o.details, /malformed request/);
    }
    assert.equal(await status('fc-ru'), CopyStatus.COPY_STATUS_UP, 'bad reports fail nothing');
    assert.ok((await watched()).copies.some((x) => x.copyId === 'fc-ru'));
    assert.equal(fmProc.child.exitCode, null);
  });
});

// ------------------------------------------------------------------------------- raw clients

type RawClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function rawClient(address: string): RawClient {
  const identity = (b: Buffer): Buffer => b;
  const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  for (const [m, d] of Object.entries(FaultManagerServiceService)) {
    def[m] = { path: d.path, requestStream: d.requestStream, responseStream: d.responseStream, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity };
  }
  const Ctor = grpc.makeGenericClientConstructor(def, 'RawFaultManagerService');
  return new Ctor(address, grpc.credentials.createInsecure()) as unknown as RawClient;
}

function rawUnary(address: string, method: 'ReportUnreachable' | 'ListWatched', bytes: Buffer): Promise<Outcome<Buffer>> {
  const client = rawClient(address);
  const name = method === 'ReportUnreachable' ? 'reportUnreachable' : 'listWatched';
  return new Promise((resolve) => {
    (client[name] as (b: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Buffer) => void) => void).call(
      client,
      bytes,
      new grpc.Metadata(),
      { deadline: Date.now() + 5000 },
      (err, res) => {
        client.close();
        resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '', res });
      },
    );
  });
}

function rawAttach(address: string, messages: Buffer[]): Promise<Outcome<Buffer>> {
  const client = rawClient(address);
  return new Promise((resolve) => {
    const stream = (client.attach as (md: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientDuplexStream<Buffer, Buffer>).call(client, new grpc.Metadata(), { deadline: Date.now() + 5000 });
    stream.on('data', () => undefined);
    stream.on('error', (e: grpc.ServiceError) => {
      client.close();
      resolve({ code: e.code, details: e.details });
    });
    stream.on('status', (s: grpc.StatusObject) => {
      if (s.code === grpc.status.OK) {
        client.close();
        resolve({ code: s.code, details: s.details });
      }
    });
    for (const m of messages) stream.write(m);
  });
}
