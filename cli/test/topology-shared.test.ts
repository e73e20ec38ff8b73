/** `sharedMasterRs` in topology files (shared data from a master RS, R-ADSM). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TopologyFileError, parseTopologyText } from '../src/topology-file';

test('sharedMasterRs is passed on when given, absent otherwise', () => {
  const t = parseTopologyText('apps:\n  - { name: enh, mode: DISTRIBUTED_FAULT_TOLERANT, rsCount: 4, standbys: 1, sharedMasterRs: 0 }\n  - { name: agg, mode: DISTRIBUTED, rsCount: 2 }\n', 't.yaml');
  assert.equal(t.apps[0]?.sharedMasterRs, 0);
  assert.equal(t.apps[1]?.sharedMasterRs, undefined);
});

test('a bad sharedMasterRs names the field', () => {
  for (const bad of ['-1', '"0"', '1.5']) {
    assert.throws(
      () => parseTopologyText(`apps:\n  - { name: enh, mode: DISTRIBUTED, rsCount: 4, sharedMasterRs: ${bad} }\n`, 't.yaml'),
      (e: unknown) => e instanceof TopologyFileError && /apps\[0\] \(enh\)\.sharedMasterRs: expected an integer >= 0/.test(e.message),
    );
  }
  assert.throws(
    () => parseTopologyText('apps:\n  - { name: enh, mode: DISTRIBUTED, rsCount: 4, shared_master_rs: 1 }\n', 't.yaml'),
    (e: unknown) => e instanceof TopologyFileError && /did you mean 'sharedMasterRs'/.test(e.message),
  );
});
