import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compileDetectionPolicy,
  createDetector,
  detect,
  nextDeadline,
  watchedCopies,
  watchedCopy,
  type DetectionPolicy,
  type DetectorEvent,
  type DetectorState,
  type DetectorStep,
  type HealthSample,
} from '../src/index';

const OK: HealthSample = { eventLoopLagMs: 1, cpuPercent: 5, rssBytes: 50_000_000, queueDepth: 0 };
const POLICY = compileDetectionPolicy({ heartbeatIntervalMs: 100, missedHeartbeats: 3, maxEventLoopLagMs: 50, maxQueueDepth: 10, breachSamples: 3 });

function attach(s: DetectorState, copyId: string, now: number, o: { incarnation?: number; host?: string; app?: string; policy?: DetectionPolicy } = {}): DetectorStep {
  return detect(s, {
    type: 'Attached',
    copyId,
    incarnation: o.incarnation ?? 1,
    app: o.app ?? 'app',
    host: o.host ?? `h-${copyId}`,
    address: '127.0.0.1:1',
    policy: o.policy ? compileDetectionPolicy(o.policy) : POLICY,
  }, now);
}

function hb(s: DetectorState, copyId: string, now: number, health: HealthSample = OK, incarnation = 1): DetectorStep {
  return detect(s, { type: 'Heartbeat', copyId, incarnation, health }, now);
}

const sweep = (s: DetectorState, now: number): DetectorStep => detect(s, { type: 'Sweep' }, now);
const kinds = (d: DetectorStep): string[] => d.reports.map((r) => `${r.kind}:${r.copies.map((c) => `${c.copyId}#${c.incarnation}`).join(',')}`);

test('CRASH: stream loss is reported at once, and only once', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0);
  const d = detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 1, reason: 'cancelled' }, 40);
  assert.deepEqual(kinds(d), ['CRASH:c1#1']);
  assert.equal(d.reports[0]!.atMs, 40);
  assert.equal(d.reports[0]!.sinceMs, 40);
  assert.match(d.reports[0]!.detail, /stream lost: cancelled/);
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 1, reason: 'again' }, 50)), []);
  assert.deepEqual(kinds(sweep(s, 900)), [], 'a lost copy is never reported HANG afterwards');
});

test('HANG: exactly at missedHeartbeats × interval after the last heartbeat, not before', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0);
  for (let t = 100; t <= 500; t += 100) {
    hb(s, 'c1', t);
    assert.deepEqual(kinds(sweep(s, t + 5)), []);
  }
  assert.deepEqual(kinds(sweep(s, 799)), [], '299 ms of silence is below 3 × 100 ms');
  const d = sweep(s, 800);
  assert.deepEqual(kinds(d), ['HANG:c1#1']);
  assert.equal(d.reports[0]!.sinceMs, 600, 'evidence starts at the first missing heartbeat');
  assert.match(d.reports[0]!.detail, /no heartbeat for 300 ms \(limit 3 × 100 ms\)/);
  assert.deepEqual(kinds(sweep(s, 2000)), []);
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 1, reason: 'x' }, 810)), [], 'reported once');
});

test('HANG counts from the attach when no heartbeat ever came; a late sweep still reports once', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 1000);
  assert.deepEqual(kinds(sweep(s, 1299)), []);
  assert.deepEqual(kinds(sweep(s, 5000)), ['HANG:c1#1']);
});

test('UNHEALTHY after breachSamples consecutive breaching samples; a good sample resets the count', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0);
  const lag: HealthSample = { ...OK, eventLoopLagMs: 80 };
  assert.deepEqual(kinds(hb(s, 'c1', 100, lag)), []);
  assert.deepEqual(kinds(hb(s, 'c1', 200, lag)), []);
  assert.deepEqual(kinds(hb(s, 'c1', 300, OK)), [], 'reset');
  assert.equal(watchedCopy(s, 'c1')!.breaches, 0);
  assert.deepEqual(kinds(hb(s, 'c1', 400, { ...OK, queueDepth: 11 })), []);
  assert.deepEqual(kinds(hb(s, 'c1', 500, lag)), [], 'any threshold counts');
  const d = hb(s, 'c1', 600, { ...lag, queueDepth: 50 });
  assert.deepEqual(kinds(d), ['UNHEALTHY:c1#1']);
  assert.equal(d.reports[0]!.sinceMs, 400);
  assert.match(d.reports[0]!.detail, /event-loop lag 80 ms > 50 ms, queue depth 50 > 10/);
  assert.deepEqual(kinds(hb(s, 'c1', 700, lag)), [], 'once');
});

test('zero thresholds are not checked', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0, { policy: { heartbeatIntervalMs: 100, breachSamples: 1 } });
  assert.deepEqual(kinds(hb(s, 'c1', 100, { eventLoopLagMs: 1e6, cpuPercent: 1e4, rssBytes: 1e12, queueDepth: 1e6 })), []);
  attach(s, 'c2', 0, { policy: { heartbeatIntervalMs: 100, breachSamples: 1, maxCpuPercent: 90, maxRssBytes: 1000 } });
  assert.deepEqual(kinds(hb(s, 'c2', 100, { ...OK, rssBytes: 1001 })), ['UNHEALTHY:c2#1']);
});

test('probes: due every probeIntervalMs; unanswered → PROBE_TIMEOUT; answered ok → nothing', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  const policy = { heartbeatIntervalMs: 100, probeIntervalMs: 250, probeTimeoutMs: 200 };
  attach(s, 'c1', 0, { policy });
  assert.deepEqual(sweep(s, 249).probesDue, []);
  let d = sweep(s, 250);
  assert.deepEqual(d.probesDue, [{ copyId: 'c1', incarnation: 1, deadlineMs: 200 }]);
  detect(s, { type: 'ProbeSent', copyId: 'c1', incarnation: 1, probeId: 1 }, 250);
  hb(s, 'c1', 300);
  detect(s, { type: 'ProbeResult', copyId: 'c1', incarnation: 1, probeId: 1, ok: true }, 310);
  hb(s, 'c1', 400);
  d = sweep(s, 500);
  assert.equal(d.probesDue.length, 1);
  detect(s, { type: 'ProbeSent', copyId: 'c1', incarnation: 1, probeId: 2 }, 500);
  hb(s, 'c1', 500);
  hb(s, 'c1', 600);
  assert.deepEqual(kinds(sweep(s, 699)), []);
  d = sweep(s, 700);
  assert.deepEqual(kinds(d), ['PROBE_TIMEOUT:c1#1']);
  assert.equal(d.reports[0]!.sinceMs, 500);
  assert.deepEqual(d.probesDue, [], 'no probes to a reported copy');
  assert.deepEqual(kinds(sweep(s, 5000)), [], 'no HANG after a PROBE_TIMEOUT: one report per incarnation');
});

test('a probe answered ok=false fails at once; unknown probe ids are ignored', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0, { policy: { probeIntervalMs: 100, probeTimeoutMs: 500 } });
  detect(s, { type: 'ProbeSent', copyId: 'c1', incarnation: 1, probeId: 7 }, 100);
  const unknown = detect(s, { type: 'ProbeResult', copyId: 'c1', incarnation: 1, probeId: 8, ok: false }, 110);
  assert.deepEqual(kinds(unknown), []);
  assert.match(unknown.ignored!, /probe 8 is not outstanding/);
  const d = detect(s, { type: 'ProbeResult', copyId: 'c1', incarnation: 1, probeId: 7, ok: false, error: 'handler threw' }, 120);
  assert.deepEqual(kinds(d), ['PROBE_TIMEOUT:c1#1']);
  assert.match(d.reports[0]!.detail, /probe 7 failed after 20 ms: handler threw/);
});

test('outstanding probes are capped', () => {
  const s = createDetector({ hostFaultWindowMs: 1000, maxOutstandingProbes: 2 });
  attach(s, 'c1', 0, { policy: { probeIntervalMs: 10, probeTimeoutMs: 100 } });
  detect(s, { type: 'ProbeSent', copyId: 'c1', incarnation: 1, probeId: 1 }, 1);
  detect(s, { type: 'ProbeSent', copyId: 'c1', incarnation: 1, probeId: 2 }, 2);
  assert.match(detect(s, { type: 'ProbeSent', copyId: 'c1', incarnation: 1, probeId: 3 }, 3).ignored!, /2 probes outstanding/);
  assert.deepEqual(sweep(s, 20).probesDue, [], 'none due while at the cap');
  assert.equal(watchedCopy(s, 'c1')!.outstandingProbes, 2);
});

test('HOST: every copy of a host lost within the window → copy reports at once plus one HOST report', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'a1', 0, { host: 'hA' });
  attach(s, 'a2', 0, { host: 'hA' });
  attach(s, 'a3', 0, { host: 'hA' });
  attach(s, 'b1', 0, { host: 'hB' });
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'a1', incarnation: 1, reason: 'x' }, 100)), ['CRASH:a1#1']);
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'a2', incarnation: 1, reason: 'x' }, 200)), ['CRASH:a2#1'], 'a3 still alive: no host fault');
  hb(s, 'a3', 250);
  hb(s, 'b1', 250);
  hb(s, 'b1', 500);
  // a3 hangs: its HANG and then the HOST report come from the same sweep.
  const d = sweep(s, 550);
  assert.deepEqual(kinds(d), ['HANG:a3#1', 'HOST:a1#1,a2#1,a3#1']);
  const host = d.reports[1]!;
  assert.equal(host.host, 'hA');
  assert.equal(host.sinceMs, 100);
  assert.match(host.detail, /all 3 watched copies of host hA lost within 450 ms/);
  assert.deepEqual(kinds(sweep(s, 560)), [], 'the host is reported once');
});

test('HOST: not for a single-copy host, nor when losses are further apart than the window', () => {
  const s = createDetector({ hostFaultWindowMs: 300 });
  attach(s, 'solo', 0, { host: 'h1' });
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'solo', incarnation: 1, reason: 'x' }, 10)), ['CRASH:solo#1']);
  attach(s, 'x1', 0, { host: 'h2', policy: { heartbeatIntervalMs: 1000 } });
  attach(s, 'x2', 0, { host: 'h2', policy: { heartbeatIntervalMs: 1000 } });
  detect(s, { type: 'StreamLost', copyId: 'x1', incarnation: 1, reason: 'x' }, 100);
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'x2', incarnation: 1, reason: 'x' }, 401)), ['CRASH:x2#1']);
});

test('HOST: an UNHEALTHY copy that still streams keeps the host alive', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'a1', 0, { host: 'hA', policy: { heartbeatIntervalMs: 100, breachSamples: 1, maxQueueDepth: 1 } });
  attach(s, 'a2', 0, { host: 'hA' });
  assert.deepEqual(kinds(hb(s, 'a1', 50, { ...OK, queueDepth: 5 })), ['UNHEALTHY:a1#1']);
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'a2', incarnation: 1, reason: 'x' }, 60)), ['CRASH:a2#1']);
  // a1's stream breaks too (fenced, it exits): no second copy report, but now the whole host is gone.
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'a1', incarnation: 1, reason: 'x' }, 70)), ['HOST:a1#1,a2#1']);
});

test('a newer incarnation replaces the older one; an older one is refused; events for the old one are ignored', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0, { incarnation: 5 });
  const d = attach(s, 'c1', 10, { incarnation: 6 });
  assert.deepEqual(d.replaced, { copyId: 'c1', incarnation: 5 });
  assert.equal(watchedCopy(s, 'c1')!.incarnation, 6);
  const old = detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 5, reason: 'x' }, 20);
  assert.deepEqual(kinds(old), []);
  assert.match(old.ignored!, /watched at incarnation 6, not 5/);
  const stale = attach(s, 'c1', 30, { incarnation: 4 });
  assert.equal(stale.rejection!.code, 'FAILED_PRECONDITION');
  assert.match(stale.rejection!.message, /incarnation 4 is stale: incarnation 6 is attached/);
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 6, reason: 'x' }, 40)), ['CRASH:c1#6']);
});

test('a re-attach of the same incarnation keeps its verdict (reported once)', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0);
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 1, reason: 'x' }, 10)), ['CRASH:c1#1']);
  assert.deepEqual(attach(s, 'c1', 20).replaced, { copyId: 'c1', incarnation: 1 });
  assert.equal(watchedCopy(s, 'c1')!.reported, 'CRASH');
  assert.deepEqual(kinds(sweep(s, 5000)), [], 'no HANG report for an already reported incarnation');
  assert.deepEqual(kinds(detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 1, reason: 'x' }, 5001)), []);
});

test('lost copies are forgotten after the window; bounded watch count', () => {
  const s = createDetector({ hostFaultWindowMs: 500, maxWatched: 2 });
  attach(s, 'c1', 0);
  attach(s, 'c2', 0);
  const full = attach(s, 'c3', 0);
  assert.equal(full.rejection!.code, 'RESOURCE_EXHAUSTED');
  detect(s, { type: 'StreamLost', copyId: 'c1', incarnation: 1, reason: 'x' }, 100);
  hb(s, 'c2', 300);
  sweep(s, 599);
  assert.ok(watchedCopy(s, 'c1'), 'still remembered inside the window');
  sweep(s, 600);
  assert.equal(watchedCopy(s, 'c1'), undefined);
  assert.equal(attach(s, 'c3', 600).rejection, undefined);
  assert.deepEqual(watchedCopies(s).map((w) => w.copyId), ['c2', 'c3']);
  assert.equal(s.hosts.has('h-c1'), false, 'host index cleaned');
});

test('policy change: new interval applies with a fresh start; probes start when enabled', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'c1', 0, { policy: { heartbeatIntervalMs: 1000 } });
  detect(s, { type: 'PolicyChanged', app: 'app', policy: compileDetectionPolicy({ heartbeatIntervalMs: 50, probeIntervalMs: 100 }) }, 500);
  assert.deepEqual(kinds(sweep(s, 599)), [], 'silence is measured from the change, not from the attach');
  assert.equal(sweep(s, 600).probesDue.length, 1);
  assert.deepEqual(kinds(sweep(s, 650)), ['HANG:c1#1']);
});

test('ExternalFault marks a watched copy reported (once) and can complete a host fault', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'a1', 0, { host: 'hA' });
  attach(s, 'a2', 0, { host: 'hA' });
  detect(s, { type: 'StreamLost', copyId: 'a1', incarnation: 1, reason: 'x' }, 10);
  const d = detect(s, { type: 'ExternalFault', copyId: 'a2', incarnation: 1, kind: 'CRASH', detail: 'unreachable' }, 20);
  assert.deepEqual(kinds(d), ['CRASH:a2#1', 'HOST:a1#1,a2#1']);
  assert.deepEqual(kinds(detect(s, { type: 'ExternalFault', copyId: 'a2', incarnation: 1, kind: 'CRASH', detail: 'again' }, 30)), []);
  assert.match(detect(s, { type: 'ExternalFault', copyId: 'zz', incarnation: 1, kind: 'CRASH', detail: '' }, 30).ignored!, /not watched/);
});

test('Detached forgets a live copy without a report; a lost one is kept for host grouping', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  attach(s, 'a1', 0, { host: 'hA' });
  attach(s, 'a2', 0, { host: 'hA' });
  assert.deepEqual(kinds(detect(s, { type: 'Detached', copyId: 'a1', incarnation: 1 }, 10)), []);
  assert.equal(watchedCopy(s, 'a1'), undefined);
  assert.deepEqual(kinds(sweep(s, 5000)), ['HANG:a2#1'], 'a1 is never reported; a2 alone is no host fault');
  detect(s, { type: 'Detached', copyId: 'a2', incarnation: 1 }, 5001);
  assert.ok(watchedCopy(s, 'a2'), 'lost copies stay until the window passes');
  assert.match(detect(s, { type: 'Detached', copyId: 'a2', incarnation: 9 }, 5002).ignored!, /not 9/);
});

test('heartbeats for unknown copies are ignored, never thrown', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  const ev: DetectorEvent = { type: 'Heartbeat', copyId: 'ghost', incarnation: 1, health: OK };
  assert.match(detect(s, ev, 0).ignored!, /not watched/);
  assert.equal(attach(s, '', 0).rejection!.code, 'INVALID_ARGUMENT');
  assert.equal(attach(s, 'c1', 0, { incarnation: 0 }).rejection!.code, 'INVALID_ARGUMENT');
});

test('seeded random schedule: at most one copy report per incarnation; every silent copy is reported within a sweep', () => {
  let seed = 12345;
  const rnd = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const s = createDetector({ hostFaultWindowMs: 200 });
  const reported = new Map<string, number>();
  const live = new Map<string, number>(); // copyId → incarnation
  const incarnations = new Map<string, number>(); // never reused
  let now = 0;
  for (let step = 0; step < 20_000; step++) {
    now += Math.floor(rnd() * 20);
    const id = `c${Math.floor(rnd() * 50)}`;
    const r = rnd();
    let d: DetectorStep;
    if (!live.has(id) || r < 0.02) {
      const inc = (incarnations.get(id) ?? 0) + 1;
      incarnations.set(id, inc);
      live.set(id, inc);
      d = attach(s, id, now, { incarnation: inc, host: `h${Math.floor(rnd() * 10)}` });
    } else if (r < 0.05) {
      d = detect(s, { type: 'StreamLost', copyId: id, incarnation: live.get(id)!, reason: 'x' }, now);
      live.delete(id);
    } else if (r < 0.9) {
      d = hb(s, id, now, rnd() < 0.1 ? { ...OK, eventLoopLagMs: 100 } : OK, live.get(id)!);
    } else {
      d = sweep(s, now);
    }
    for (const rep of d.reports) {
      if (rep.kind === 'HOST') continue;
      const key = `${rep.copies[0]!.copyId}#${rep.copies[0]!.incarnation}`;
      reported.set(key, (reported.get(key) ?? 0) + 1);
      assert.equal(reported.get(key), 1, `${key} reported twice`);
      if (rep.kind !== 'CRASH') live.delete(rep.copies[0]!.copyId);
    }
  }
  assert.ok(reported.size > 50, `the schedule exercised reports (${reported.size})`);
  // Everything still live and silent for longer than 3 × 100 ms is reported by one final sweep.
  const d = sweep(s, now + 10_000);
  const hung = new Set(d.reports.filter((r) => r.kind === 'HANG').map((r) => r.copies[0]!.copyId));
  for (const id of live.keys()) if (!reported.has(`${id}#${live.get(id)}`)) assert.ok(hung.has(id), `${id} must be reported HANG`);
  assert.ok(s.heap.length <= 2 * s.copies.size + 1024);
});

test('nextDeadline: a Sweep at it finds the hang; it is never after the true deadline', () => {
  const s = createDetector({ hostFaultWindowMs: 1000 });
  assert.equal(nextDeadline(s), Infinity, 'nothing watched');
  attach(s, 'c1', 0);
  // Probes are off in POLICY: the hang deadline (3 × 100 ms after the last heartbeat) rules.
  assert.ok(nextDeadline(s) <= 300, `first deadline ${nextDeadline(s)}`);
  for (let t = 100; t <= 500; t += 100) hb(s, 'c1', t);
  // Sweeping at each announced deadline walks it forward to the true one without a report.
  let at = nextDeadline(s);
  let sweeps = 0;
  while (at < 800 && sweeps < 20) {
    assert.deepEqual(kinds(sweep(s, at)), [], `no report at ${at}`);
    at = nextDeadline(s);
    sweeps++;
  }
  assert.equal(at, 800, 'the true deadline: last heartbeat 500 + 3 × 100');
  assert.deepEqual(kinds(sweep(s, 799)), []);
  assert.deepEqual(kinds(sweep(s, 800)), ['HANG:c1#1']);
  assert.equal(nextDeadline(s), 1800, 'then only forgetting the lost copy is due (host-fault window)');
});
