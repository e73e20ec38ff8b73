import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Mode, Partitioning } from '@understudy/proto';
import { TopologyFileError, formatOf, loadTopologyFile, parseTopologyText } from '../src/topology-file';

const VALID_YAML = `
# two apps and one edge
apps:
  - name: collector
    mode: DISTRIBUTED
    rsCount: 8
    minCopies: 2
  - { name: aggregator, mode: distributed_fault_tolerant, rsCount: 16, standbys: 1, minCopies: 3 }
  - name: enhancer
    mode: MODE_FAULT_TOLERANT
    rsCount: 1
    standbys: 2
edges:
  - { from: collector, to: aggregator, keyField: subscriber }
`;

const VALID_JSON = JSON.stringify({
  apps: [
    { name: 'collector', mode: 'DISTRIBUTED', rsCount: 8, minCopies: 2 },
    { name: 'aggregator', mode: 'DISTRIBUTED_FAULT_TOLERANT', rsCount: 16, standbys: 1, minCopies: 3 },
    { name: 'enhancer', mode: 'FAULT_TOLERANT', rsCount: 1, standbys: 2 },
  ],
  edges: [{ from: 'collector', to: 'aggregator', keyField: 'subscriber' }],
});

/** The problems of a parse that must fail (asserts it fails with a TopologyFileError). */
function problemsOf(text: string, file = 'topo.yaml'): { error: TopologyFileError; problems: readonly string[] } {
  try {
    parseTopologyText(text, file);
  } catch (e) {
    assert.ok(e instanceof TopologyFileError, `expected TopologyFileError, got ${String(e)}`);
    assert.ok(e.message.includes(file), `message must name the file: ${e.message}`);
    return { error: e, problems: e.problems };
  }
  assert.fail(`expected ${JSON.stringify(text)} to be rejected`);
}

function assertProblem(text: string, re: RegExp, file?: string): void {
  const { problems } = problemsOf(text, file);
  assert.ok(problems.some((p) => re.test(p)), `expected a problem matching ${re}, got:\n${problems.join('\n')}`);
}

describe('topology file: valid input', () => {
  it('parses YAML with defaults, case-insensitive modes and a MODE_ prefix', () => {
    const t = parseTopologyText(VALID_YAML, 'topo.yaml');
    assert.deepEqual(t.apps, [
      { name: 'collector', mode: Mode.MODE_DISTRIBUTED, rsCount: 8, standbys: 0, minCopies: 2, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] },
      { name: 'aggregator', mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: 16, standbys: 1, minCopies: 3, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] },
      { name: 'enhancer', mode: Mode.MODE_FAULT_TOLERANT, rsCount: 1, standbys: 2, minCopies: 1, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] },
    ]);
    assert.deepEqual(t.edges, [{ from: 'collector', to: 'aggregator', keyField: 'subscriber' }]);
  });

  it('parses a detection policy (missing fields are 0 = controller default) and rejects bad ones', () => {
    const t = parseTopologyText('apps:\n  - { name: a, mode: DISTRIBUTED, rsCount: 2, detection: { heartbeatIntervalMs: 100, missedHeartbeats: 2 } }\n', 'topo.yaml');
    assert.equal(t.apps[0]!.detection?.heartbeatIntervalMs, 100);
    assert.equal(t.apps[0]!.detection?.missedHeartbeats, 2);
    assert.equal(t.apps[0]!.detection?.probeIntervalMs, 0);
    assertProblem('apps:\n  - { name: a, mode: DISTRIBUTED, rsCount: 2, detection: { heartbeatIntervalMs: fast } }\n', /detection\.heartbeatIntervalMs: expected a number/);
    assertProblem('apps:\n  - { name: a, mode: DISTRIBUTED, rsCount: 2, detection: { heartbeatMs: 5 } }\n', /detection.*heartbeatMs/);
  });

  it('parses the same topology from JSON', () => {
    assert.deepEqual(parseTopologyText(VALID_JSON, 'topo.json'), parseTopologyText(VALID_YAML, 'topo.yaml'));
  });

  it('accepts JSON in a .yaml file (YAML is a superset) and a file without edges', () => {
    const t = parseTopologyText('{"apps":[{"name":"a","mode":"DISTRIBUTED","rsCount":1}]}', 'x.yml');
    assert.equal(t.apps.length, 1);
    assert.deepEqual(t.edges, []);
    assert.deepEqual(parseTopologyText('apps: []\nedges:\n', 'y.yaml'), { apps: [], edges: [] });
  });

  it('chooses the format by extension', () => {
    assert.equal(formatOf('a.json'), 'json');
    assert.equal(formatOf('A.JSON'), 'json');
    assert.equal(formatOf('a.yaml'), 'yaml');
    assert.equal(formatOf('a.yml'), 'yaml');
    assert.equal(formatOf('topology'), 'yaml');
  });
});

describe('topology file: each kind of error names the file and the field', () => {
  it('empty file', () => assertProblem('  \n', /empty/));
  it('YAML syntax error', () => assertProblem('apps: [ { name: a\n', /not valid YAML/));
  it('repeated YAML key', () => assertProblem('apps: []\napps: []\n', /not valid YAML.*(unique|duplicate)/i));
  it('JSON syntax error', () => assertProblem('{"apps": [', /not valid JSON/, 'topo.json'));
  it('top level is a list', () => assertProblem('- a\n- b\n', /top level, got a list/));
  it('top level is a scalar', () => assertProblem('42\n', /top level, got 42/));
  it('apps missing', () => assertProblem('edges: []\n', /^apps: missing/));
  it('apps not a list', () => assertProblem('apps: {name: a}\n', /^apps: expected a list, got a mapping/));
  it('unknown top-level key', () => assertProblem('apps: []\nextra: 1\n', /top level: unknown key 'extra'.*allowed: apps, edges/));
  it('an app that is not a mapping', () => assertProblem('apps: [counter]\n', /^apps\[0\]: expected a mapping/));
  it('unknown app key, with a suggestion', () =>
    assertProblem('apps: [{name: a, mode: DISTRIBUTED, rs_count: 2}]\n', /apps\[0\] \(a\): unknown key 'rs_count' \(did you mean 'rsCount'\?\)/));
  it('unknown app key without a near match', () =>
    assertProblem('apps: [{name: a, mode: DISTRIBUTED, rsCount: 2, color: red}]\n', /apps\[0\] \(a\): unknown key 'color'; allowed: name, mode, rsCount, standbys, minCopies/));
  it('missing name', () => assertProblem('apps: [{mode: DISTRIBUTED, rsCount: 2}]\n', /^apps\[0\]\.name: missing/));
  it('empty name', () => assertProblem('apps: [{name: "", mode: DISTRIBUTED, rsCount: 2}]\n', /^apps\[0\]\.name: must not be empty/));
  it('name not a string', () => assertProblem('apps: [{name: 7, mode: DISTRIBUTED, rsCount: 2}]\n', /^apps\[0\]\.name: expected a string, got 7/));
  it('missing mode', () => assertProblem('apps: [{name: a, rsCount: 2}]\n', /apps\[0\] \(a\)\.mode: missing \(one of DISTRIBUTED, FAULT_TOLERANT, DISTRIBUTED_FAULT_TOLERANT\)/));
  it('bad mode', () => assertProblem('apps: [{name: a, mode: ACTIVE_ACTIVE, rsCount: 2}]\n', /apps\[0\] \(a\)\.mode: unknown mode 'ACTIVE_ACTIVE'/));
  it('mode as a number', () => assertProblem('apps: [{name: a, mode: 1, rsCount: 2}]\n', /apps\[0\] \(a\)\.mode: expected one of .* got 1/));
  it('rsCount 0', () => assertProblem('apps: [{name: a, mode: DISTRIBUTED, rsCount: 0}]\n', /apps\[0\] \(a\)\.rsCount: expected an integer >= 1, got 0/));
  it('rsCount missing', () => assertProblem('apps: [{name: a, mode: DISTRIBUTED}]\n', /apps\[0\] \(a\)\.rsCount: missing/));
  it('rsCount as a string', () => assertProblem('apps: [{name: a, mode: DISTRIBUTED, rsCount: "4"}]\n', /rsCount: expected an integer >= 1, got the string "4"/));
  it('rsCount fractional', () => assertProblem('apps: [{name: a, mode: DISTRIBUTED, rsCount: 1.5}]\n', /rsCount: expected an integer >= 1, got 1.5/));
  it('rsCount beyond uint32', () => assertProblem('apps: [{name: a, mode: DISTRIBUTED, rsCount: 4294967296}]\n', /rsCount: expected an integer/));
  it('negative standbys', () => assertProblem('apps: [{name: a, mode: DISTRIBUTED, rsCount: 1, standbys: -1}]\n', /standbys: expected an integer >= 0, got -1/));
  it('minCopies 0', () => assertProblem('apps: [{name: a, mode: DISTRIBUTED, rsCount: 1, minCopies: 0}]\n', /minCopies: expected an integer >= 1, got 0/));
  it('duplicate app names', () =>
    assertProblem(
      'apps:\n  - {name: a, mode: DISTRIBUTED, rsCount: 1}\n  - {name: a, mode: DISTRIBUTED, rsCount: 2}\n',
      /apps\[1\]\.name: duplicate application name 'a' \(also apps\[0\]\)/,
    ));
  it('edges not a list', () => assertProblem('apps: []\nedges: {from: a}\n', /^edges: expected a list/));
  it('edge not a mapping', () => assertProblem('apps: []\nedges: [a->b]\n', /^edges\[0\]: expected a mapping/));
  it('edge missing keyField', () => assertProblem('apps: []\nedges: [{from: a, to: b}]\n', /^edges\[0\]\.keyField: missing/));
  it('edge unknown key', () => assertProblem('apps: []\nedges: [{from: a, to: b, keyField: k, key_field: k}]\n', /edges\[0\]: unknown key 'key_field' \(did you mean 'keyField'\?\)/));
  it('edge with an empty end', () => assertProblem('apps: []\nedges: [{from: a, to: " ", keyField: k}]\n', /edges\[0\]\.to: must not be empty/));

  it('reports every problem at once, one per line', () => {
    const { error, problems } = problemsOf('apps:\n  - {name: a, mode: NOPE, rsCount: 0}\n  - {mode: DISTRIBUTED, rsCount: 1}\nbogus: true\n');
    assert.equal(problems.length, 4, problems.join('\n'));
    assert.match(error.message, /^bad topology file topo\.yaml \(4 problems\):\n {2}- /);
  });
});

describe('loadTopologyFile', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'understudy-topo-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads YAML and JSON files', async () => {
    await writeFile(path.join(dir, 't.yaml'), VALID_YAML);
    await writeFile(path.join(dir, 't.json'), VALID_JSON);
    assert.deepEqual(await loadTopologyFile(path.join(dir, 't.json')), await loadTopologyFile(path.join(dir, 't.yaml')));
  });

  it('a missing file is a TopologyFileError naming it', async () => {
    const f = path.join(dir, 'nope.yaml');
    await assert.rejects(loadTopologyFile(f), (e: unknown) => {
      assert.ok(e instanceof TopologyFileError);
      assert.equal(e.message, `bad topology file ${f}: cannot read the file: no such file`);
      return true;
    });
  });

  it('a directory is a TopologyFileError', async () => {
    await assert.rejects(loadTopologyFile(dir), /cannot read the file: is a directory/);
  });
});

describe('topology file: partitioning', () => {
  it('accepts partitioning hash|range (any case, PARTITIONING_ prefix) with rangeStarts', () => {
    const t = parseTopologyText(
      `apps:
  - { name: ledger, mode: DISTRIBUTED, rsCount: 3, partitioning: range, rangeStarts: [g, p] }
  - { name: counts, mode: DISTRIBUTED, rsCount: 2, partitioning: HASH }
  - { name: other, mode: DISTRIBUTED, rsCount: 2, partitioning: PARTITIONING_RANGE, rangeStarts: ['10'] }
`,
      'topo.yaml',
    );
    assert.deepEqual(
      t.apps.map((a) => [a.name, a.partitioning, a.rangeStarts]),
      [
        ['ledger', Partitioning.PARTITIONING_RANGE, ['g', 'p']],
        ['counts', Partitioning.PARTITIONING_HASH, []],
        ['other', Partitioning.PARTITIONING_RANGE, ['10']],
      ],
    );
    const j = parseTopologyText(JSON.stringify({ apps: [{ name: 'ledger', mode: 'DISTRIBUTED', rsCount: 2, partitioning: 'range', rangeStarts: ['m'] }] }), 't.json');
    assert.deepEqual(j.apps[0]!.rangeStarts, ['m']);
  });

  it('rejects bad partitioning and range starts, naming the field', () => {
    const app = (extra: string): string => `apps:\n  - { name: ledger, mode: DISTRIBUTED, rsCount: 3, ${extra} }\n`;
    assertProblem(app('partitioning: zones'), /apps\[0\] \(ledger\)\.partitioning: expected one of hash, range, got the string "zones"/);
    assertProblem(app('partitioning: range, rangeStarts: [g]'), /apps\[0\] \(ledger\)\.rangeStarts: RANGE partitioning with rsCount 3 needs exactly 2 range starts/);
    assertProblem(app('partitioning: range'), /needs exactly 2 range starts .*got 0/);
    assertProblem(app('partitioning: range, rangeStarts: [p, g]'), /apps\[0\] \(ledger\)\.rangeStarts\[1\]: "g" must sort strictly after "p"/);
    assertProblem(app('partitioning: range, rangeStarts: [10, 20]'), /rangeStarts\[0\]: expected a string \(quote numbers/);
    assertProblem(app('partitioning: range, rangeStarts: g'), /rangeStarts: expected a list of strings/);
    assertProblem(app('rangeStarts: [g, p]'), /apps\[0\] \(ledger\)\.rangeStarts: HASH partitioning takes no range starts/);
    assertProblem(app('range_starts: [g, p]'), /unknown key 'range_starts' \(did you mean 'rangeStarts'\?\)/);
  });
});
