/** Shared data declared in the topology (`sharedMasterRs`, R-ADSM): validated, kept, fixed once declared. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, emptyState, validateTopology } from '../src/index';
import { T0, ok, rejected, spec, topo } from './helpers';

test('validateTopology: sharedMasterRs must be an RS id of the app', () => {
  const base = spec('enh', 'DISTRIBUTED_FAULT_TOLERANT', 4, 1);
  assert.equal(validateTopology({ apps: [{ ...base, sharedMasterRs: 0 }], edges: [] }), null);
  assert.equal(validateTopology({ apps: [{ ...base, sharedMasterRs: 3 }], edges: [] }), null);
  for (const bad of [4, -1, 1.5, Number.NaN, '0' as unknown as number]) {
    const r = validateTopology({ apps: [{ ...base, sharedMasterRs: bad }], edges: [] });
    assert.ok(r, `sharedMasterRs ${String(bad)} refused`);
    assert.equal(r.code, 'INVALID_ARGUMENT');
    assert.match(r.message, /apps\[0\]\.sharedMasterRs: app "enh" has sharedMasterRs .*; must be an RS id in 0\.\.3/);
  }
});

test('ApplyTopology keeps sharedMasterRs and refuses to change, add or drop it on a declared app', () => {
  const base = spec('enh', 'DISTRIBUTED_FAULT_TOLERANT', 4, 1);
  const st = ok(emptyState(), topo({ ...base, sharedMasterRs: 2 })).state;
  assert.equal(st.apps.enh?.spec.sharedMasterRs, 2);
  rejected(st, topo({ ...base, sharedMasterRs: 1 }), 'FAILED_PRECONDITION', /changing sharedMasterRs 2 -> 1/);
  rejected(st, topo(base), 'FAILED_PRECONDITION', /changing sharedMasterRs 2 -> none/);
  const plain = ok(emptyState(), topo(base)).state;
  assert.equal(plain.apps.enh?.spec.sharedMasterRs, undefined, 'absent: no shared data');
  rejected(plain, topo({ ...base, sharedMasterRs: 0 }), 'FAILED_PRECONDITION', /changing sharedMasterRs none -> 0/);
  // Re-applying the same declaration is fine (and changes nothing).
  const again = decide(st, topo({ ...base, sharedMasterRs: 2 }), T0 + 1);
  assert.equal(again.rejection, undefined);
  assert.equal(again.state.apps.enh?.spec.sharedMasterRs, 2);
});
