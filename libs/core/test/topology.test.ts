import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, emptyState, validateTopology } from '../src/index';
import type { AppSpec, Topology } from '../src/index';
import { T0, cluster, ok, reg, rejected, spec, topo } from './helpers';

const good = (apps: AppSpec[], edges: Topology['edges'] = []): Topology => ({ apps, edges });

test('validateTopology accepts a valid topology', () => {
  assert.equal(validateTopology(good([spec('agg', 'DISTRIBUTED', 4, 0), spec('enh', 'DISTRIBUTED_FAULT_TOLERANT', 8, 2)], [{ from: 'agg', to: 'enh', keyField: 'id' }])), null);
});

test('validateTopology rejects each bad field with a message naming it', () => {
  const cases: [Topology, RegExp][] = [
    [good([spec('Agg', 'DISTRIBUTED', 1, 0)]), /apps\[0\]\.name: "Agg" is not a valid app name/],
    [good([spec('a'.repeat(64), 'DISTRIBUTED', 1, 0)]), /apps\[0\]\.name/],
    [good([spec('agg', 'DISTRIBUTED', 1, 0), spec('agg', 'DISTRIBUTED', 1, 0)]), /apps\[1\]\.name: app "agg" is declared twice/],
    [good([{ ...spec('agg', 'DISTRIBUTED', 1, 0), mode: 'HOT' as never }]), /apps\[0\]\.mode: app "agg" has mode "HOT"/],
    [good([spec('agg', 'DISTRIBUTED', 0, 0)]), /apps\[0\]\.rsCount: app "agg" has rsCount 0; must be an integer in 1\.\.1000000/],
    [good([spec('agg', 'DISTRIBUTED', 1_000_001, 0)]), /rsCount 1000001/],
    [good([spec('agg', 'DISTRIBUTED', 2.5, 0)]), /rsCount 2\.5/],
    [good([spec('agg', 'DISTRIBUTED', 4, 1)]), /apps\[0\]\.standbys: app "agg" is DISTRIBUTED and must have standbys 0/],
    [good([spec('ft', 'FAULT_TOLERANT', 4, 0)]), /apps\[0\]\.standbys: app "ft" is FAULT_TOLERANT and needs standbys in 1\.\.16 \(got 0\)/],
    [good([spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 4, 17)]), /app "dft" is DISTRIBUTED_FAULT_TOLERANT and needs standbys in 1\.\.16 \(got 17\)/],
    [good([spec('agg', 'DISTRIBUTED', 4, 0, 0)]), /apps\[0\]\.minCopies: app "agg" has minCopies 0/],
    [good([spec('agg', 'DISTRIBUTED', 4, 0)], [{ from: 'agg', to: 'nope', keyField: 'k' }]), /edges\[0\]\.to: app "nope" is not declared/],
    [good([spec('agg', 'DISTRIBUTED', 4, 0)], [{ from: 'agg', to: 'agg', keyField: ' ' }]), /edges\[0\]\.keyField: edge agg -> agg needs a non-empty keyField/],
    [
      good([spec('a', 'DISTRIBUTED', 4, 0), spec('b', 'DISTRIBUTED', 4, 0)], [
        { from: 'a', to: 'b', keyField: 'k' },
        { from: 'a', to: 'b', keyField: 'j' },
      ]),
      /edges\[1\]: duplicate edge a -> b/,
    ],
    [{ apps: 'x' } as unknown as Topology, /topology\.apps: must be a list/],
  ];
  for (const [t, re] of cases) {
    const r = validateTopology(t);
    assert.ok(r, `expected a rejection for ${re}`);
    assert.equal(r.code, 'INVALID_ARGUMENT');
    assert.match(r.message, re);
  }
});

test('validateTopology lets edges reference already declared apps', () => {
  const t = good([spec('b', 'DISTRIBUTED', 4, 0)], [{ from: 'a', to: 'b', keyField: 'k' }]);
  assert.notEqual(validateTopology(t), null);
  assert.equal(validateTopology(t, ['a']), null);
});

test('TopologyApplied declares apps, is idempotent, and keeps apps not listed', () => {
  const d1 = ok(emptyState(), topo(spec('agg', 'DISTRIBUTED', 4, 0)));
  assert.equal(d1.state.version, 1);
  assert.match(d1.notes.join('\n'), /app agg declared: mode=DISTRIBUTED rsCount=4 standbys=0 minCopies=1/);
  assert.equal(d1.state.apps.agg!.rs.length, 4);
  assert.equal(d1.state.apps.agg!.activated, false);
  const again = ok(d1.state, topo(spec('agg', 'DISTRIBUTED', 4, 0)));
  assert.equal(again.state, d1.state, 'unchanged topology: same state, no version bump');
  assert.deepEqual(again.notes, ['topology unchanged']);
  const d2 = ok(d1.state, { type: 'TopologyApplied', topology: { apps: [spec('enh', 'DISTRIBUTED', 2, 0)], edges: [{ from: 'agg', to: 'enh', keyField: 'id' }] } });
  assert.deepEqual(Object.keys(d2.state.apps).sort(), ['agg', 'enh']);
  assert.deepEqual(d2.state.edges, [{ from: 'agg', to: 'enh', keyField: 'id' }]);
  assert.match(d2.notes.join('\n'), /edge agg -> enh added \(key id\)/);
  const d3 = ok(d2.state, { type: 'TopologyApplied', topology: { apps: [], edges: [] } });
  assert.deepEqual(d3.state.edges, []);
  assert.deepEqual(d3.notes, ['edge agg -> enh removed']);
});

test('TopologyApplied refuses mode and rsCount changes of a declared app', () => {
  const s = ok(emptyState(), topo(spec('agg', 'DISTRIBUTED', 4, 0))).state;
  rejected(s, topo(spec('agg', 'DISTRIBUTED_FAULT_TOLERANT', 4, 1)), 'FAILED_PRECONDITION', /app "agg": changing mode DISTRIBUTED -> DISTRIBUTED_FAULT_TOLERANT is not supported/);
  rejected(s, topo(spec('agg', 'DISTRIBUTED', 8, 0)), 'FAILED_PRECONDITION', /app "agg": changing rsCount 4 -> 8/);
  rejected(s, topo(spec('agg', 'DISTRIBUTED', 4, 2)), 'INVALID_ARGUMENT', /standbys/);
});

test('TopologyApplied: raising standbys adds standbys, lowering drops the last ones', () => {
  let s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 1), ['c1@h1', 'c2@h2', 'c3@h3', 'c4@h4']);
  for (const a of s.apps.dft!.rs) assert.equal(a.members.length, 2);
  const up = ok(s, topo(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 3)));
  assert.match(up.notes.join('\n'), /app dft: standbys 1 -> 3/);
  for (const a of up.state.apps.dft!.rs) assert.deepEqual(a.members.map((m) => m.role), ['ACTIVE', 'STANDBY', 'STANDBY', 'STANDBY']);
  s = up.state;
  const down = ok(s, topo(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 1)));
  for (let r = 0; r < 6; r++) {
    const before = s.apps.dft!.rs[r]!.members;
    const after = down.state.apps.dft!.rs[r]!.members;
    assert.equal(after[0]!.copyId, before[0]!.copyId, 'the active stays');
    assert.equal(after.filter((m) => m.role === 'STANDBY').length, 1);
    assert.equal(after[0]!.copyId === before[0]!.copyId && down.state.apps.dft!.rs[r]!.epoch, s.apps.dft!.rs[r]!.epoch, 'no new epoch');
  }
});

test('TopologyApplied: lowering minCopies activates the app', () => {
  let s = ok(emptyState(), topo(spec('agg', 'DISTRIBUTED', 4, 0, 3))).state;
  s = ok(s, reg('c1', 'agg', 'h1')).state;
  assert.equal(s.apps.agg!.activated, false);
  const d = ok(s, topo(spec('agg', 'DISTRIBUTED', 4, 0, 1)));
  assert.equal(d.state.apps.agg!.activated, true);
  assert.match(d.notes.join('\n'), /minCopies 3 -> 1/);
});

test('malformed events are INVALID_ARGUMENT, never exceptions', () => {
  const s = emptyState();
  rejected(s, { type: 'Nope' } as never, 'INVALID_ARGUMENT', /unknown event type "Nope"/);
  rejected(s, null as never, 'INVALID_ARGUMENT', /event: must be an object/);
  rejected(s, { type: 'TopologyApplied', topology: null } as never, 'INVALID_ARGUMENT', /topology/);
  rejected(s, reg('', 'agg', 'h1'), 'INVALID_ARGUMENT', /copyId: must be a non-empty string/);
  const st = ok(s, topo(spec('agg', 'DISTRIBUTED', 4, 0))).state;
  rejected(st, reg('c1', 'agg', 'h1', -1), 'INVALID_ARGUMENT', /incarnation: must be an integer >= 0/);
  rejected(st, { type: 'SwitchoverRequested', app: 'agg', rs: 1.5, toCopyId: 'c1' }, 'INVALID_ARGUMENT', /rs: must be an integer/);
  rejected(st, { type: 'LeadershipAcquired', passiveTimeoutMs: -5 }, 'INVALID_ARGUMENT', /passiveTimeoutMs/);
  const d = decide(st, { type: 'Tick' }, Number.NaN);
  assert.equal(d.rejection?.code, 'INVALID_ARGUMENT');
  assert.equal(decide(st, { type: 'Tick' }, T0).state, st);
});

test('registration ids are bounded and "__proto__" is refused', () => {
  const st = ok(emptyState(), topo(spec('agg', 'DISTRIBUTED', 4, 0))).state;
  rejected(st, reg('x'.repeat(257), 'agg', 'h1'), 'INVALID_ARGUMENT', /copyId: at most 256 characters/);
  rejected(st, reg('__proto__', 'agg', 'h1'), 'INVALID_ARGUMENT', /reserved/);
  const d = ok(st, reg('constructor', 'agg', 'h1'));
  assert.equal(d.state.copies['constructor' as string]?.copyId, 'constructor');
  assert.equal(JSON.parse(JSON.stringify(d.state)).copies.constructor.status, 'UP');
});
