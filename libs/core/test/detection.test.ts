import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileDetectionPolicy, decide, DETECTION_DEFAULTS, emptyState, validateTopology } from '../src/index';
import type { Topology } from '../src/model';

const topo = (detection: unknown): Topology =>
  ({ apps: [{ name: 'a', mode: 'DISTRIBUTED_FAULT_TOLERANT', rsCount: 4, standbys: 1, minCopies: 2, detection }], edges: [] }) as unknown as Topology;

test('detection policy: defaults fill absent and zero fields', () => {
  assert.deepEqual(compileDetectionPolicy(undefined), DETECTION_DEFAULTS);
  const c = compileDetectionPolicy({ heartbeatIntervalMs: 100, missedHeartbeats: 0, maxEventLoopLagMs: 50 });
  assert.equal(c.heartbeatIntervalMs, 100);
  assert.equal(c.missedHeartbeats, DETECTION_DEFAULTS.missedHeartbeats);
  assert.equal(c.maxEventLoopLagMs, 50);
});

test('detection policy: bad values are rejected with the field path', () => {
  for (const [bad, re] of [
    [{ heartbeatIntervalMs: 5 }, /apps\[0\]\.detection.*heartbeatIntervalMs: 5 is out of range/],
    [{ missedHeartbeats: -1 }, /missedHeartbeats/],
    [{ maxCpuPercent: 'x' }, /maxCpuPercent/],
    [{ heartbeatMs: 100 }, /heartbeatMs: unknown field/],
    [{ probeIntervalMs: 100, probeTimeoutMs: 5000 }, /probeTimeoutMs: 5000 ms is more than 10 probe intervals/],
    ['fast', /detection.*must be an object/],
  ] as const) {
    const r = validateTopology(topo(bad));
    assert.equal(r?.code, 'INVALID_ARGUMENT', JSON.stringify(bad));
    assert.match(r!.message, re);
  }
  assert.equal(validateTopology(topo({ heartbeatIntervalMs: 100, breachSamples: 2 })), null);
});

test('a policy change is recorded in the spec and moves no role', () => {
  let s = decide(emptyState(), { type: 'TopologyApplied', topology: topo(undefined) }, 0).state;
  const d = decide(s, { type: 'TopologyApplied', topology: topo({ heartbeatIntervalMs: 100 }) }, 1);
  assert.equal(d.rejection, undefined);
  assert.equal(d.state.apps.a!.spec.detection?.heartbeatIntervalMs, 100);
  assert.ok(d.notes.some((n) => n.includes('detection policy')));
  assert.equal(d.commands.filter((c) => c.type === 'SetRoles').length, 0);
  s = d.state;
  assert.equal(decide(s, { type: 'TopologyApplied', topology: topo({ heartbeatIntervalMs: 100 }) }, 2).state, s, 'same policy again: no change');
});
