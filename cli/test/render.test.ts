import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CopyStatus, Mode, Partitioning, Role, type GetStatusResponse, type RsAssignment } from '@understudy/proto';
import {
  formatAge,
  renderApplyResult,
  renderDisable,
  renderDrain,
  renderEnable,
  renderJson,
  renderStatus,
  renderSwitchover,
  toJsonView,
} from '../src/render';

/** Table rows of rendered output: each `│ a │ b │` line as its trimmed cells. */
function rows(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('│'))
    .map((l) => l.split('│').slice(1, -1).map((c) => c.trim()));
}

function hasRow(text: string, cells: string[]): boolean {
  return rows(text).some((r) => r.length === cells.length && r.every((c, i) => c === cells[i]));
}

function assertRow(text: string, cells: string[]): void {
  assert.ok(hasRow(text, cells), `expected a row ${JSON.stringify(cells)} in:\n${text}`);
}

const NOW = 1_700_000_000_000;

const assignment: RsAssignment = {
  app: 'counter',
  rs: 5,
  epoch: 12,
  version: 30,
  members: [
    { copyId: 'c2', address: '127.0.0.1:9002', role: Role.ROLE_ACTIVE, incarnation: 1, catchingUp: false },
    { copyId: 'c3', address: '127.0.0.1:9003', role: Role.ROLE_STANDBY, incarnation: 1, catchingUp: false },
    { copyId: 'c4', address: '127.0.0.1:9004', role: Role.ROLE_STANDBY, incarnation: 1, catchingUp: false },
    { copyId: 'c1', address: '127.0.0.1:9001', role: Role.ROLE_OUT_OF_SERVICE, incarnation: 1, catchingUp: false },
  ],
};

const status: GetStatusResponse = {
  controllerId: 'ctl-2',
  leaderId: 'ctl-2',
  leaderAddress: '127.0.0.1:7101',
  leaderTerm: 7,
  passive: true,
  stateVersion: 99,
  moves: [],
  standbyMoves: [],
  apps: [
    {
      spec: { name: 'counter', mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: 8, standbys: 2, minCopies: 3, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] },
      activated: true,
      rsWithActive: 8,
      rsFullyReplicated: 6,
    },
    {
      spec: { name: 'ingest', mode: Mode.MODE_DISTRIBUTED, rsCount: 4, standbys: 0, minCopies: 1, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] },
      activated: false,
      rsWithActive: 0,
      rsFullyReplicated: 0,
    },
  ],
  copies: [
    { copyId: 'c1', app: 'counter', host: 'host-a', address: '127.0.0.1:9001', incarnation: 3, status: CopyStatus.COPY_STATUS_DISABLED, activeCount: 0, standbyCount: 0, lastHeardUnixMs: NOW - 90_000 },
    { copyId: 'c2', app: 'counter', host: 'host-b', address: '127.0.0.1:9002', incarnation: 4, status: CopyStatus.COPY_STATUS_UP, activeCount: 3, standbyCount: 5, lastHeardUnixMs: NOW - 250 },
    { copyId: 'c9', app: 'ingest', host: 'host-c', address: '127.0.0.1:9009', incarnation: 1, status: CopyStatus.COPY_STATUS_DRAINED, activeCount: 0, standbyCount: 0, lastHeardUnixMs: 0 },
  ],
  assignments: [assignment],
  edges: [{ from: 'ingest', to: 'counter', keyField: 'subscriber' }],
};

describe('renderStatus', () => {
  const out = renderStatus(status, { nowMs: NOW });

  it('shows the leader: id, address, term, passive', () => {
    assertRow(out, ['leader', 'address', 'term', 'passive', 'state version']);
    assertRow(out, ['ctl-2', '127.0.0.1:7101', '7', 'yes (waiting for copies)', '99']);
  });

  it('shows each app: mode, RS count, standbys, activated, RS with active / fully replicated', () => {
    assertRow(out, ['app', 'mode', 'RS', 'standbys', 'min copies', 'activated', 'RS with active', 'RS fully replicated']);
    assertRow(out, ['counter', 'DISTRIBUTED_FAULT_TOLERANT', '8', '2', '3', 'yes', '8/8', '6/8']);
    assertRow(out, ['ingest', 'DISTRIBUTED', '4', '0', '1', 'no', '0/4', '0/4']);
  });

  it('shows each copy: id, host, address, status, #active, #standby, last heard', () => {
    assertRow(out, ['copy', 'app', 'host', 'address', 'status', 'active', 'standby', 'last heard']);
    assertRow(out, ['c1', 'counter', 'host-a', '127.0.0.1:9001', 'DISABLED', '0', '0', '1m 30s ago']);
    assertRow(out, ['c2', 'counter', 'host-b', '127.0.0.1:9002', 'UP', '3', '5', '250ms ago']);
    assertRow(out, ['c9', 'ingest', 'host-c', '127.0.0.1:9009', 'DRAINED', '0', '0', 'never']);
  });

  it('shows the data-flow map', () => {
    assertRow(out, ['ingest', 'counter', 'subscriber']);
  });

  it('leaves assignments out unless asked', () => {
    assert.ok(!out.includes('Assignments'));
    assert.ok(!hasRow(out, ['counter', '5', '12', 'c2', 'c3, c4', 'c1']));
  });

  it('with assignments: epoch, active, standbys in order, out of service', () => {
    const withA = renderStatus(status, { nowMs: NOW, assignments: true });
    assertRow(withA, ['app', 'RS', 'epoch', 'active', 'standbys', 'out of service']);
    assertRow(withA, ['counter', '5', '12', 'c2', 'c3, c4', 'c1']);
  });

  it('a standby still catching up is marked', () => {
    const syncing: RsAssignment = { ...assignment, members: assignment.members.map((m) => (m.copyId === 'c4' ? { ...m, catchingUp: true } : m)) };
    const t = renderStatus({ ...status, assignments: [syncing] }, { nowMs: NOW, assignments: true });
    assertRow(t, ['counter', '5', '12', 'c2', 'c3, c4 (catching up)', 'c1']);
  });

  it('pending moves and balancing\'s standby moves are listed, each in its own section', () => {
    assert.ok(!out.includes('in progress'), 'no section when nothing is pending');
    const t = renderStatus(
      {
        ...status,
        moves: [{ app: 'counter', rs: 2, fromCopyId: 'c1', toCopyId: 'c3', sinceUnixMs: NOW - 4000, reason: 'load manager' }],
        standbyMoves: [{ app: 'counter', rs: 5, fromCopyId: 'c4', toCopyId: 'c5', sinceUnixMs: NOW - 2000 }],
      },
      { nowMs: NOW },
    );
    assert.match(t, /Moves in progress \(target catching up\)/);
    assertRow(t, ['counter/2', 'c1', 'c3', '4.0s ago', 'load manager']);
    assert.match(t, /Standby moves in progress \(balancing; new standby catching up\)/);
    assertRow(t, ['RS', 'from', 'to', 'since']);
    assertRow(t, ['counter/5', 'c4', 'c5', '2.0s ago']);
  });

  it('an RS without an active copy says so', () => {
    const orphan: RsAssignment = { ...assignment, rs: 6, members: [{ copyId: 'c1', address: 'x:1', role: Role.ROLE_OUT_OF_SERVICE, incarnation: 1, catchingUp: false }] };
    const t = renderStatus({ ...status, assignments: [orphan] }, { nowMs: NOW, assignments: true });
    assertRow(t, ['counter', '6', '12', '(none)', '-', 'c1']);
  });

  it('an empty cluster reads as such', () => {
    const t = renderStatus({ ...status, apps: [], copies: [], edges: [], assignments: [] }, { nowMs: NOW, assignments: true });
    assert.match(t, /no applications declared/);
    assert.match(t, /no copies registered/);
    assert.match(t, /no assignments/);
    assert.ok(!t.includes('Data-flow map'));
  });

  it('unknown enum values are shown, not hidden', () => {
    const t = renderStatus({ ...status, copies: [{ ...status.copies[0]!, status: 0 as CopyStatus }] }, { nowMs: NOW });
    assert.match(t, /UNSPECIFIED\(0\)/);
  });

  it('has no colour codes', () => {
    // eslint-disable-next-line no-control-regex
    assert.ok(!/\u001b\[/.test(out));
  });
});

describe('other renderers', () => {
  it('apply lists the changes', () => {
    assert.equal(renderApplyResult('t.yaml', { stateVersion: 4, changes: ['declared app counter', 'added edge a -> b'] }), 'applied t.yaml: state version 4\n  - declared app counter\n  - added edge a -> b\n');
    assert.equal(renderApplyResult('t.yaml', { stateVersion: 4, changes: [] }), 'applied t.yaml: state version 4 (no changes)\n');
  });

  it('switchover names the new active and its epoch', () => {
    const t = renderSwitchover('counter', 5, { assignment, paused: true, pauseMs: 4.256, pauseDetail: '' });
    assert.match(t, /^switchover of counter\/5 done: active is c2 \(127\.0\.0\.1:9002\) at epoch 12 \(paused 4\.26 ms\)\n/);
    assertRow(t, ['counter', '5', '12', 'c2', 'c3, c4', 'c1']);
    assert.match(renderSwitchover('counter', 5, { assignment, paused: false, pauseMs: 301, pauseDetail: '' }), /at epoch 12 \(switched in 301\.0 ms without a pause: the old active did not answer/);
    assert.match(renderSwitchover('counter', 5, { assignment, paused: false, pauseMs: 301, pauseDetail: 'Deadline exceeded' }), /without a pause: the old active was not paused: Deadline exceeded; the epoch fenced it\)/);
    assert.match(renderSwitchover('counter', 5, { assignment, paused: false, pauseMs: 0, pauseDetail: '' }), /at epoch 12\n/);
  });

  it('drain, disable and enable', () => {
    assert.match(renderDrain('c3', { movedActive: 2, movedStandby: 5 }), /^drained c3: moved 2 active and 5 standby RS/);
    assert.match(renderDisable('c3', { failedOver: 2 }), /^disabled c3: 2 RS failed over/);
    assert.equal(renderEnable('c3', { status: CopyStatus.COPY_STATUS_UP }), 'enabled c3: status UP\n');
  });
});

describe('JSON output', () => {
  it('is one line of JSON with enum names', () => {
    const text = renderJson(status);
    assert.equal(text.split('\n').length, 2);
    assert.ok(text.endsWith('\n'));
    const j = JSON.parse(text) as {
      leaderId: string;
      apps: { spec: { name: string; mode: string; partitioning: string } }[];
      copies: { status: string }[];
      assignments: { members: { role: string }[] }[];
    };
    assert.equal(j.leaderId, 'ctl-2');
    assert.deepEqual(j.apps.map((a) => [a.spec.name, a.spec.mode, a.spec.partitioning]), [
      ['counter', 'DISTRIBUTED_FAULT_TOLERANT', 'HASH'],
      ['ingest', 'DISTRIBUTED', 'HASH'],
    ]);
    assert.deepEqual(j.copies.map((c) => c.status), ['DISABLED', 'UP', 'DRAINED']);
    assert.deepEqual(j.assignments[0]!.members.map((m) => m.role), ['ACTIVE', 'STANDBY', 'STANDBY', 'OUT_OF_SERVICE']);
  });

  it('leaves numbers that are not enums alone', () => {
    assert.deepEqual(toJsonView({ rs: 3, epoch: 9, status: 1, nested: [{ role: 2 }] }), { rs: 3, epoch: 9, status: 'UP', nested: [{ role: 'STANDBY' }] });
  });
});

describe('formatAge', () => {
  it('covers the ranges', () => {
    assert.equal(formatAge(0, NOW), 'never');
    assert.equal(formatAge(NOW - 5, NOW), '5ms ago');
    assert.equal(formatAge(NOW - 12_345, NOW), '12.3s ago');
    assert.equal(formatAge(NOW - (4 * 60_000 + 5_000), NOW), '4m 05s ago');
    assert.equal(formatAge(NOW - (2 * 3_600_000 + 3 * 60_000), NOW), '2h 03m ago');
    assert.equal(formatAge(NOW + 60_000, NOW), 'in the future');
  });
});
