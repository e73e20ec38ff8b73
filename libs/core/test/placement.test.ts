import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkBalance, copyLoads, decide, fullRoleSet, keyToRs, placeInitial, routesOf, spreadOrder } from '../src/index';
import type { CopyInfo, Member } from '../src/index';
import { prng } from './sim';
import { cluster, ok, reg, spec } from './helpers';

function copies(n: number, hosts: number): CopyInfo[] {
  return Array.from({ length: n }, (_, i) => ({
    copyId: `c${String(i).padStart(3, '0')}`,
    app: 'x',
    host: `h${i % hosts}`,
    address: `a${i}`,
    incarnation: 1,
    status: 'UP' as const,
    registeredAtMs: 0,
    lastHeardAtMs: 0,
  }));
}

function stats(placed: Member[][], cs: CopyInfo[]) {
  const host = new Map(cs.map((c) => [c.copyId, c.host]));
  const act = new Map(cs.map((c) => [c.copyId, 0]));
  const tot = new Map(cs.map((c) => [c.copyId, 0]));
  let hostClashes = 0;
  for (const m of placed) {
    const ids = m.map((x) => x.copyId);
    assert.equal(new Set(ids).size, ids.length, 'a copy at most once per RS');
    assert.equal(m[0]!.role, 'ACTIVE');
    assert.ok(m.slice(1).every((x) => x.role === 'STANDBY'));
    const hs = ids.map((id) => host.get(id));
    if (new Set(hs).size !== hs.length) hostClashes++;
    act.set(m[0]!.copyId, act.get(m[0]!.copyId)! + 1);
    for (const id of ids) tot.set(id, tot.get(id)! + 1);
  }
  const spreadOf = (x: Map<string, number>) => Math.max(...x.values()) - Math.min(...x.values());
  return { activeSpread: spreadOf(act), totalSpread: spreadOf(tot), hostClashes };
}

test('keyToRs is FNV-1a 32 of the UTF-8 bytes modulo rsCount', () => {
  assert.equal(keyToRs('', 2 ** 32), 0x811c9dc5);
  assert.equal(keyToRs('a', 2 ** 32), 0xe40c292c);
  assert.equal(keyToRs('foobar', 2 ** 32), 0xbf9cf968);
  assert.equal(keyToRs('foobar', 1000), 0xbf9cf968 % 1000);
  // Agrees with hashing TextEncoder bytes, including multi-byte and lone surrogates.
  const ref = (s: string, n: number): number => {
    let h = 0x811c9dc5;
    for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193);
    return (h >>> 0) % n;
  };
  for (const k of ['é', 'naïve-key', '日本', '😀x', '\ud800', 'a\udc00b', 'subscriber:42']) assert.equal(keyToRs(k, 97), ref(k, 97), k);
  const rnd = prng(7);
  for (let i = 0; i < 500; i++) {
    const k = String.fromCharCode(...Array.from({ length: 1 + Math.floor(rnd() * 12) }, () => Math.floor(rnd() * 0xffff)));
    assert.equal(keyToRs(k, 1009), ref(k, 1009));
  }
  assert.throws(() => keyToRs('a', 0), RangeError);
});

test('spreadOrder interleaves hosts evenly', () => {
  const order = spreadOrder(copies(12, 3)).map((c) => c.host);
  assert.deepEqual(order, ['h0', 'h1', 'h2', 'h0', 'h1', 'h2', 'h0', 'h1', 'h2', 'h0', 'h1', 'h2']);
  const uneven = spreadOrder([...copies(2, 1).map((c) => ({ ...c, host: 'big' })), ...copies(1, 1).map((c) => ({ ...c, copyId: 'z', host: 'small' }))]);
  assert.deepEqual(uneven.map((c) => c.host), ['big', 'small', 'big']);
});

test('placeInitial: balanced within 1 (actives and totals), distinct copies, distinct hosts when possible', () => {
  for (const [rs, n, hosts, k] of [
    [100, 10, 5, 2],
    [64, 7, 3, 1],
    [1000, 33, 6, 3],
    [5, 40, 6, 2],
    [1, 4, 1, 3],
    [10_000, 100, 50, 2],
  ] as const) {
    const cs = copies(n, hosts);
    const placed = placeInitial(spec('x', 'DISTRIBUTED_FAULT_TOLERANT', rs, k), cs);
    assert.equal(placed.length, rs);
    const st = stats(placed, cs);
    assert.ok(st.activeSpread <= 1, `actives ${rs}/${n}: ${st.activeSpread}`);
    assert.ok(st.totalSpread <= 1, `totals ${rs}/${n}: ${st.totalSpread}`);
    if (hosts >= 1 + k) assert.equal(st.hostClashes, 0, `host clashes for ${rs} RS on ${n} copies / ${hosts} hosts`);
    for (const m of placed) assert.equal(m.length, Math.min(1 + k, n));
  }
});

test('placeInitial: DISTRIBUTED round-robin, FAULT_TOLERANT one shared list, under-replication, purity', () => {
  const cs = copies(4, 2);
  const d = placeInitial(spec('x', 'DISTRIBUTED', 10, 0), cs);
  assert.ok(d.every((m) => m.length === 1));
  assert.ok(stats(d, cs).activeSpread <= 1);
  const ft = placeInitial(spec('x', 'FAULT_TOLERANT', 5, 2), cs);
  assert.ok(ft.every((m) => m === ft[0]), 'one list for every RS');
  assert.deepEqual(ft[0]!.map((m) => `${m.copyId}:${m.role[0]}`), ['c000:A', 'c001:S', 'c002:S'], 'first by id active, standbys prefer other hosts');
  const under = placeInitial(spec('x', 'DISTRIBUTED_FAULT_TOLERANT', 6, 3), copies(2, 2));
  assert.ok(under.every((m) => m.length === 2), 'places what it can');
  assert.deepEqual(placeInitial(spec('x', 'DISTRIBUTED_FAULT_TOLERANT', 50, 2), cs), placeInitial(spec('x', 'DISTRIBUTED_FAULT_TOLERANT', 50, 2), [...cs].reverse()));
  const down = cs.map((c, i) => (i === 0 ? { ...c, status: 'DRAINED' as const } : c));
  assert.ok(placeInitial(spec('x', 'DISTRIBUTED', 9, 0), down).every((m) => m[0]!.copyId !== 'c000'), 'only UP copies');
});

test('placeInitial declusters: a failed copy’s actives fail over to many different copies', () => {
  const cs = copies(100, 10);
  const placed = placeInitial(spec('x', 'DISTRIBUTED_FAULT_TOLERANT', 10_000, 2), cs);
  const heirs = new Map<string, number>();
  for (const m of placed) if (m[0]!.copyId === 'c000') heirs.set(m[1]!.copyId, (heirs.get(m[1]!.copyId) ?? 0) + 1);
  assert.ok(heirs.size >= 60, `first standbys of c000's actives on ${heirs.size} copies`);
  assert.ok(Math.max(...heirs.values()) <= 6, `at most ${Math.max(...heirs.values())} on one copy`);
});

test('routesOf, fullRoleSet and copyLoads agree with the state', () => {
  const s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 1), ['c1@h1', 'c2@h2', 'c3@h3']);
  const routes = routesOf(s, 'dft');
  assert.equal(routes.length, 6);
  for (const r of routes) {
    const a = s.apps.dft!.rs[r.rs]!;
    assert.equal(r.active?.copyId, a.members[0]!.copyId);
    assert.equal(r.epoch, a.epoch);
    assert.equal(r.previous, null);
    assert.deepEqual(r.standbys.map((x) => x.copyId), [a.members[1]!.copyId]);
  }
  assert.deepEqual(routesOf(s, 'nope'), []);
  const loads = copyLoads(s, 'dft');
  let sum = 0;
  for (const id of ['c1', 'c2', 'c3']) {
    const set = fullRoleSet(s, id);
    assert.equal(set.full, true);
    assert.equal(set.entries.filter((e) => e.role === 'ACTIVE').length, loads.get(id)!.active);
    assert.equal(set.entries.filter((e) => e.role === 'STANDBY').length, loads.get(id)!.standby);
    assert.deepEqual(set.entries.map((e) => e.rs), [...set.entries.map((e) => e.rs)].sort((a, b) => a - b));
    sum += loads.get(id)!.active;
  }
  assert.equal(sum, 6);
  assert.throws(() => fullRoleSet(s, 'zz'), RangeError);
  assert.deepEqual(checkBalance(s), []);
});

test('decisions do not depend on cached indexes (a cloned state decides the same)', () => {
  let s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 40, 2), ['c1@h1', 'c2@h2', 'c3@h3', 'c4@h1', 'c5@h2']);
  const events = [
    { type: 'CopyFailed', copyId: 'c2', incarnation: 1, reason: 'x' },
    reg('c6', 'dft', 'h3'),
    { type: 'Tick' },
    { type: 'DrainRequested', copyId: 'c4' },
    reg('c2', 'dft', 'h2', 2),
    { type: 'Tick' },
  ] as const;
  for (const ev of events) {
    const warm = ok(s, ev, 5000);
    const cold = decide(structuredClone(s), ev, 5000);
    assert.deepEqual(cold.state, warm.state);
    assert.deepEqual(cold.commands, warm.commands);
    assert.deepEqual(cold.notes, warm.notes);
    s = warm.state;
  }
});
