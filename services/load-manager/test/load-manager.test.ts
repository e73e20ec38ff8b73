/**
 * Load manager pieces: report validation, the placement conversion, the bounded history, and a
 * copy's LoadReporter against real load manager instances (in process, real gRPC): it reports to
 * its application's first-choice instance, moves to the next when that one dies, and goes back
 * once it is up again.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CopyStatus, Mode, Role, type GetStatusResponse, type ReportLoadRequest } from '@understudy/proto';
import { InvalidArgumentError, freePort, silentLogger } from '@understudy/runtime';
import { LoadReporter, faultManagerOrder } from '@understudy/adsm';
import { LoadHistory, placementOf, startLoadManager, validateReport, type LoadManagerHandle } from '../src/index';
import { waitFor } from '../../../test/harness/wait';

const GOOD: ReportLoadRequest = { copyId: 'c1', incarnation: 7, app: 'counter', seq: 1, intervalMs: 1000, cpuPercent: 12.5, eventLoopLagMs: 3, msgsPerS: 40, queueDepth: 2, rs: [{ rs: 0, msgsPerS: 30, stateBytes: 100 }, { rs: 3, msgsPerS: 10, stateBytes: 5 }] };

test('validateReport accepts a good report and names the bad field otherwise', () => {
  const r = validateReport(GOOD, 100);
  assert.equal(r.copyId, 'c1');
  assert.deepEqual(r.rs.map((x) => x.rs), [0, 3]);
  const bad: [Partial<ReportLoadRequest>, RegExp][] = [
    [{ copyId: '' }, /copy_id must match/],
    [{ copyId: 'a b' }, /copy_id must match/],
    [{ incarnation: 0 }, /incarnation must be a positive integer/],
    [{ app: '' }, /app must match/],
    [{ cpuPercent: Number.POSITIVE_INFINITY }, /cpu_percent/],
    [{ eventLoopLagMs: -2 }, /event_loop_lag_ms/],
    [{ msgsPerS: Number.NaN }, /msgs_per_s/],
    [{ rs: [{ rs: 0, msgsPerS: -1, stateBytes: 0 }] }, /rs\[0\]\.msgs_per_s/],
    [{ rs: [{ rs: 2_000_000, msgsPerS: 1, stateBytes: 0 }] }, /rs\[0\]\.rs must be an RS id/],
    [{ rs: [{ rs: 1, msgsPerS: 1, stateBytes: 0 }, { rs: 1, msgsPerS: 1, stateBytes: 0 }] }, /RS 1 is listed twice/],
  ];
  for (const [patch, re] of bad) assert.throws(() => validateReport({ ...GOOD, ...patch }, 100), (e: unknown) => e instanceof InvalidArgumentError && re.test(e.message), JSON.stringify(patch));
  assert.throws(() => validateReport(GOOD, 1), /at most 1 RS entries/);
});

test('placementOf: actives, caught-up and catching-up standbys, statuses, pending moves', () => {
  const member = (copyId: string, role: Role, catchingUp = false) => ({ copyId, address: '', role, incarnation: 1, catchingUp });
  const res = {
    controllerId: 'x',
    leaderId: 'x',
    leaderAddress: '',
    leaderTerm: 1,
    passive: false,
    apps: [{ spec: { name: 'counter', mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: 2, standbys: 1, minCopies: 2, partitioning: 0, rangeStarts: [] }, activated: true, rsWithActive: 1, rsFullyReplicated: 1 }],
    copies: [
      { copyId: 'c1', app: 'counter', host: 'h', address: '', incarnation: 3, status: CopyStatus.COPY_STATUS_UP, activeCount: 1, standbyCount: 0, lastHeardUnixMs: 0 },
      { copyId: 'c2', app: 'counter', host: 'h', address: '', incarnation: 4, status: CopyStatus.COPY_STATUS_DRAINED, activeCount: 0, standbyCount: 1, lastHeardUnixMs: 0 },
    ],
    assignments: [{ app: 'counter', rs: 0, epoch: 2, version: 3, members: [member('c1', Role.ROLE_ACTIVE), member('c2', Role.ROLE_STANDBY), member('c3', Role.ROLE_STANDBY, true)] }],
    edges: [],
    stateVersion: 9,
    moves: [{ app: 'counter', rs: 0, fromCopyId: 'c1', toCopyId: 'c3', sinceUnixMs: 1, reason: 'x' }],
  } as unknown as GetStatusResponse;
  const p = placementOf(res, 123);
  assert.equal(p.atMs, 123);
  assert.deepEqual(p.apps, [
    {
      name: 'counter',
      mode: 'DISTRIBUTED_FAULT_TOLERANT',
      activated: true,
      rs: [
        { rs: 0, active: 'c1', standbys: [{ copyId: 'c2', caughtUp: true }, { copyId: 'c3', caughtUp: false }] },
        { rs: 1, active: null, standbys: [] },
      ],
    },
  ]);
  assert.deepEqual(p.copies.map((c) => [c.copyId, c.status, c.incarnation]), [['c1', 'UP', 3], ['c2', 'DRAINED', 4]]);
  assert.deepEqual(p.pending, [{ app: 'counter', rs: 0, fromCopyId: 'c1', toCopyId: 'c3' }]);
});

test('LoadHistory: newer incarnation replaces, older is refused, old samples and bounds are dropped', () => {
  const h = new LoadHistory({ retainMs: 10_000, maxSamples: 3, maxCopies: 2 });
  const rep = (o: Partial<typeof GOOD> = {}) => validateReport({ ...GOOD, ...o }, 100);
  for (let i = 0; i < 5; i++) assert.equal(h.record(rep(), 1000 + i), undefined);
  assert.equal(h.copySeries()[0]!.samples.length, 3, 'bounded per series');
  assert.deepEqual(h.rsSeries().map((s) => [s.rs, s.samples.length]), [[0, 3], [3, 3]]);
  assert.equal(h.record(rep({ incarnation: 6 }), 2000)?.code, 'STALE_INCARNATION');
  assert.equal(h.record(rep({ incarnation: 8 }), 2000), undefined);
  assert.deepEqual(h.copySeries().map((s) => [s.incarnation, s.samples.length]), [[8, 1]]);
  assert.equal(h.record(rep({ copyId: 'c2' }), 2000), undefined);
  assert.equal(h.record(rep({ copyId: 'c3' }), 2000)?.code, 'FULL');
  h.prune(2000 + 10_001);
  assert.equal(h.size, 0);
  assert.deepEqual(h.rsSeries(), []);
});

test('LoadReporter: counts per RS, reports to the first choice, fails over, and goes back', async () => {
  const ports = [await freePort(), await freePort()];
  const addresses = ports.map((p) => `127.0.0.1:${p}`);
  const order = faultManagerOrder('counter', addresses);
  const start = (address: string, id: string): Promise<LoadManagerHandle> =>
    startLoadManager({ id, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), listenAddress: address, reportIntervalMs: 100, placementRefreshMs: 60_000, planIntervalMs: 60_000 });
  const lms = new Map<string, LoadManagerHandle>();
  for (const [i, a] of order.entries()) lms.set(a, await start(a, `lm-${i}`));
  const active = new Set([0, 3]);
  const reporter = new LoadReporter({
    addresses,
    copyId: 'c9',
    incarnation: 1,
    app: 'counter',
    activeRs: () => active,
    queueDepth: () => 4,
    stateBytes: (rs) => rs * 10,
    logger: silentLogger(),
    reportIntervalMs: 100,
    retryBackoffMs: 200,
    rehomeIntervalMs: 300,
  });
  const reportsTo = (a: string): boolean => lms.get(a)?.reporting().some((r) => r.copyId === 'c9' && r.lastReportAtMs > performance.timeOrigin + performance.now() - 500) ?? false;
  try {
    // Counting: a sample covers the handled messages of its interval, per ACTIVE RS.
    reporter.handled(3, 50);
    reporter.handled(7, 5);
    const s = reporter.sample();
    assert.deepEqual(s.rs.map((x) => x.rs), [0, 3]);
    assert.ok(s.rs[1]!.msgsPerS > 0 && s.rs[0]!.msgsPerS === 0);
    assert.ok(s.msgsPerS >= s.rs[1]!.msgsPerS, 'the copy total counts every RS');
    assert.equal(s.rs[1]!.stateBytes, 30);
    assert.equal(s.queueDepth, 4);
    assert.equal(reporter.sample().msgsPerS, 0, 'counters start over every interval');

    reporter.start();
    await waitFor(() => reportsTo(order[0]!), { what: 'reports at the first choice', timeoutMs: 5000 });
    assert.equal(reporter.attachedTo, order[0]);
    await lms.get(order[0]!)!.stop();
    lms.delete(order[0]!);
    await waitFor(() => reportsTo(order[1]!), { what: 'reports moved to the second instance', timeoutMs: 5000 });
    lms.set(order[0]!, await start(order[0]!, 'lm-0b'));
    await waitFor(() => reportsTo(order[0]!) && reporter.attachedTo === order[0], { what: 'reports back at the first choice', timeoutMs: 10_000 });
  } finally {
    reporter.stop();
    await Promise.all([...lms.values()].map((l) => l.stop()));
  }
});
