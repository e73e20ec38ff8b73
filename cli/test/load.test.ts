import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CopyStatus, LoadVerdict, MoveReason, type GetLoadResponse, type GetPlanResponse } from '@understudy/proto';
import { loadJsonView, parseLoadManagerList, planJsonView, renderLoad, renderPlan, UsageError } from '../src/index';

const NOW = 1_700_000_000_000;

const COPY = {
  copyId: 'c1',
  app: 'counter',
  incarnation: 3,
  status: CopyStatus.COPY_STATUS_UP,
  verdict: LoadVerdict.LOAD_VERDICT_RISING,
  activeRs: 2,
  msgsPerS: 120,
  reportedMsgsPerS: 118,
  cpuPercent: 35.2,
  eventLoopLagMs: 4,
  queueDepth: 1,
  capacityMsgsPerS: 200,
  utilization: 0.6,
  projected: 0.9,
  plannedUtilization: 0.3,
  lastReportUnixMs: NOW - 400,
  explanation: '60.0% (120 msg/s of 200), projected 90.0% in 10s: projected to saturate within 10s; moves rs 1 → c2 (promotion)',
};
const NODATA = { ...COPY, copyId: 'c3', verdict: LoadVerdict.LOAD_VERDICT_NO_DATA, lastReportUnixMs: 0, explanation: 'no load report yet: neither source nor target' };
const MOVE = { app: 'counter', rs: 1, fromCopyId: 'c1', toCopyId: 'c2', reason: MoveReason.MOVE_REASON_ANTICIPATION, promotion: true, msgsPerS: 60, detail: 'c1 at 60.0% is projected to reach 90.0% within 10s' };

test('renderLoad: copies and RS tables; no-data copies show dashes', () => {
  const r: GetLoadResponse = {
    loadManagerId: 'lm-1',
    atUnixMs: NOW,
    copies: [COPY, NODATA],
    rs: [{ app: 'counter', rs: 1, activeCopyId: 'c1', msgsPerS: 60, slopePerS: 2, stateBytes: 2048, lastReportUnixMs: NOW - 300, lockedUntilUnixMs: NOW + 12_000 }],
    apps: [{ app: 'counter', meanUtilization: 0.3, upperUtilization: 0.5, maxUtilization: 0.6, explanation: 'mean 30.0%' }],
    placementUnixMs: NOW - 200,
  };
  const out = renderLoad(r, NOW);
  assert.match(out, /load manager lm-1/);
  assert.match(out, /│ counter │ c1\s+│ UP\s+│ RISING\s+│ 2\s+│ 120\s+│ 35\.2/);
  assert.match(out, /│ c3\s+│ UP\s+│ NO_DATA\s+│ 2\s+│ -/);
  assert.match(out, /│ counter │ 1\s+│ c1\s+│ 60\.0\s+│ \+2\.00\s+│ 2\.0 KiB\s+│ 300ms ago\s+│ 12s more/);
  assert.match(out, /counter: mean 30\.0%/);
  const json = loadJsonView(r) as { copies: { verdict: string; status: number }[] };
  assert.equal(json.copies[0]!.verdict, 'RISING');
});

test('renderPlan: blocked line, moves with reasons, explanations, recent moves with outcomes', () => {
  const r: GetPlanResponse = {
    loadManagerId: 'lm-1',
    atUnixMs: NOW,
    dryRun: true,
    blocked: '',
    moves: [MOVE],
    copies: [COPY],
    apps: [],
    summary: ['ANTICIPATION: …'],
    recentMoves: [{ move: { ...MOVE, reason: MoveReason.MOVE_REASON_IMBALANCE, promotion: false }, startedUnixMs: NOW - 5000, finishedUnixMs: NOW - 4900, outcome: 'ok', pauseMs: 3.25 }],
  };
  const out = renderPlan(r, NOW);
  assert.match(out, /dry run/);
  assert.match(out, /│ counter\/1 │ c1 -> c2 │ ANTICIPATION │ promotion\s+│ 60\.0/);
  assert.match(out, /projected to reach 90\.0%/);
  assert.match(out, /Recent moves/);
  assert.match(out, /5\.0s ago .* IMBALANCE .* state transfer .* ok .* 3\.25/);
  assert.match(renderPlan({ ...r, moves: [], blocked: 'controller passive', summary: ['controller passive'] }, NOW), /BLOCKED: controller passive[\s\S]*none: controller passive/);
  const json = planJsonView(r) as { moves: { reason: string }[]; recentMoves: { move: { reason: string } }[] };
  assert.equal(json.moves[0]!.reason, 'ANTICIPATION');
  assert.equal(json.recentMoves[0]!.move.reason, 'IMBALANCE');
});

test('parseLoadManagerList: host:port list, duplicates removed, bad entries named', () => {
  assert.deepEqual(parseLoadManagerList(' 127.0.0.1:7400, 127.0.0.1:7400,h:1'), ['127.0.0.1:7400', 'h:1']);
  assert.throws(() => parseLoadManagerList(''), UsageError);
  assert.throws(() => parseLoadManagerList('127.0.0.1'), /'127\.0\.0\.1' is not host:port/);
  assert.throws(() => parseLoadManagerList('h:70000'), /port 1\.\.65535/);
});
