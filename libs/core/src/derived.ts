/**
 * Derived per-application indexes: copy → RS it is listed in, per-copy ACTIVE/STANDBY counts, and
 * the RS that need repair. They are pure functions of an `AppState`, never persisted, and cached
 * in a WeakMap keyed by the app's `rs` array so that a decision touching 300 of 100,000 RS does
 * not rescan all of them.
 *
 * Ownership rule: a decision *takes* the index of the state it starts from, updates it in place
 * as it writes RS, and stores it under the new `rs` array. Deciding again on the older state
 * later simply rebuilds its index (correct, only slower), so callers never observe stale data.
 *
 * `rsOf` lists are arrays with lazy deletion: an entry may be stale (the copy left that RS; it
 * is dropped at the next compaction). Each list is a sorted prefix plus an unsorted tail of
 * recent appends (which may repeat an RS); {@link sortedRs} merges the tail on demand. Arrays
 * make placement cheap (300,000 appends instead of Set inserts), and scans always walk the
 * sorted, deduplicated list, so a search can stop at its first match and still decide the same
 * whatever the history of the cache. Readers verify each RS (or use {@link listedRs}).
 */
import type { AppState, Member, RsAssignment } from './model';

/** Per-copy ACTIVE/STANDBY counters, addressed by slot. */
export interface Counts {
  act: Int32Array;
  sb: Int32Array;
}

/** Derived index of one application (see module doc). Mutable; owned by one state at a time. */
export interface AppIndex extends Counts {
  /** Standbys per RS the `deficient` set was computed for (spec.standbys). */
  k: number;
  /** copyId → slot. Slots are assigned on first sight and never reused. */
  readonly slotOf: Map<string, number>;
  /** slot → copyId. */
  readonly ids: string[];
  /** slot → RS ids where the copy is (or was) listed; see module doc and {@link sortedRs}. */
  readonly rsOf: number[][];
  /** slot → length of the sorted, duplicate-free prefix of `rsOf[slot]`. */
  sortedLen: Int32Array;
  /** slot → number of RS where the copy is listed (any role, OUT_OF_SERVICE included). */
  listed: Int32Array;
  /** RS without an ACTIVE or with a standby count different from `k` (to repair). */
  deficient: Set<number>;
}

const cache = new WeakMap<readonly RsAssignment[], AppIndex>();

function isDeficient(members: readonly Member[], k: number): boolean {
  let active = 0;
  let sb = 0;
  for (let i = 0; i < members.length; i++) {
    const role = members[i]!.role;
    if (role === 'ACTIVE') active++;
    else if (role === 'STANDBY') sb++;
  }
  return active === 0 || sb !== k;
}

function grow(a: Int32Array, cap: number): Int32Array {
  const b = new Int32Array(cap);
  b.set(a);
  return b;
}

/** Slot of `copyId`, allocating one (and growing the counters) when first seen. */
export function ensureSlot(idx: AppIndex, copyId: string): number {
  let s = idx.slotOf.get(copyId);
  if (s !== undefined) return s;
  s = idx.ids.length;
  idx.slotOf.set(copyId, s);
  idx.ids.push(copyId);
  idx.rsOf.push([]);
  if (s >= idx.act.length) {
    const cap = Math.max(16, idx.act.length * 2);
    idx.act = grow(idx.act, cap);
    idx.sb = grow(idx.sb, cap);
    idx.listed = grow(idx.listed, cap);
    idx.sortedLen = grow(idx.sortedLen, cap);
  }
  return s;
}

function emptyIndex(k: number): AppIndex {
  return {
    k,
    slotOf: new Map(),
    ids: [],
    rsOf: [],
    act: new Int32Array(16),
    sb: new Int32Array(16),
    listed: new Int32Array(16),
    sortedLen: new Int32Array(16),
    deficient: new Set(),
  };
}

/** Builds the index of `app` from scratch (O(total members)). */
export function buildIndex(app: AppState): AppIndex {
  const idx = emptyIndex(app.spec.standbys);
  for (const a of app.rs) {
    for (const m of a.members) {
      const s = ensureSlot(idx, m.copyId);
      idx.rsOf[s]!.push(a.rs);
      idx.sortedLen[s] = idx.rsOf[s]!.length; // RS visited in ascending order
      idx.listed[s]!++;
      if (m.role === 'ACTIVE') idx.act[s]!++;
      else if (m.role === 'STANDBY') idx.sb[s]!++;
    }
    // Before activation every RS is empty by design; "deficient" only means something after it.
    if (app.activated && isDeficient(a.members, idx.k)) idx.deficient.add(a.rs);
  }
  return idx;
}

/** Re-derives `deficient` after a change of the app's standby count. */
export function setStandbyTarget(idx: AppIndex, rs: readonly RsAssignment[], activated: boolean, k: number): void {
  if (idx.k === k) return;
  idx.k = k;
  const d = new Set<number>();
  if (activated) for (const a of rs) if (isDeficient(a.members, k)) d.add(a.rs);
  idx.deficient = d;
}

function listedIn(members: readonly Member[], copyId: string): boolean {
  for (let i = 0; i < members.length; i++) if (members[i]!.copyId === copyId) return true;
  return false;
}

/** True when `members` lists m's copy with m's role. */
function holds(members: readonly Member[], m: Member): boolean {
  for (let i = 0; i < members.length; i++) {
    const x = members[i]!;
    if (x === m || (x.copyId === m.copyId && x.role === m.role)) return true;
  }
  return false;
}

/**
 * Updates the index for RS `rs`, whose members changed from `before` to `after`; `current` is
 * the app's RS array *after* the change (used to compact lists).
 */
export function applyChange(idx: AppIndex, rs: number, before: readonly Member[], after: readonly Member[], current: readonly RsAssignment[]): void {
  // Entries present in both lists with the same role cancel out: only the others need their
  // copy's slot (a map lookup). A failover usually changes one or two entries of a list.
  // Indexed loops: member lists come in several array shapes (placement, builders, JSON), and
  // a polymorphic for-of allocates an iterator per loop on this path (thousands per failure).
  for (let i = 0; i < before.length; i++) {
    const m = before[i]!;
    if (holds(after, m)) continue;
    const s = idx.slotOf.get(m.copyId)!;
    idx.listed[s]!--;
    if (m.role === 'ACTIVE') idx.act[s]!--;
    else if (m.role === 'STANDBY') idx.sb[s]!--;
  }
  for (let i = 0; i < after.length; i++) {
    const m = after[i]!;
    if (holds(before, m)) continue;
    const s = ensureSlot(idx, m.copyId);
    idx.listed[s]!++;
    if (m.role === 'ACTIVE') idx.act[s]!++;
    else if (m.role === 'STANDBY') idx.sb[s]!++;
    if (!listedIn(before, m.copyId)) {
      const list = idx.rsOf[s]!;
      const n = list.length;
      list.push(rs);
      // Appending a larger id to a fully sorted list keeps it sorted (placement, FT failover).
      if (idx.sortedLen[s] === n && (n === 0 || list[n - 1]! < rs)) idx.sortedLen[s] = n + 1;
      if (list.length > 2 * idx.listed[s]! + 64) listedRs(idx, s, current);
    }
  }
  if (isDeficient(after, idx.k)) idx.deficient.add(rs);
  else idx.deficient.delete(rs);
}

/**
 * The list of `slot` made ascending and duplicate-free (merging the unsorted tail into the
 * prefix). May still hold stale RS ids: callers verify membership.
 */
export function sortedRs(idx: AppIndex, slot: number): readonly number[] {
  const list = idx.rsOf[slot]!;
  const p = idx.sortedLen[slot]!;
  const n = list.length;
  if (p === n) return list;
  // In place (these lists live in the index: fresh arrays would survive young GCs and make
  // them expensive): sort the tail in a scratch buffer, merge backwards, drop duplicates.
  const t = n - p;
  if (scratch.length < t) scratch = new Float64Array(Math.max(t, 2 * scratch.length));
  for (let i = 0; i < t; i++) scratch[i] = list[p + i]!;
  const tail = scratch.subarray(0, t).sort();
  let i = p - 1;
  let j = t - 1;
  for (let k = n - 1; k >= 0; k--) list[k] = j < 0 || (i >= 0 && list[i]! > tail[j]!) ? list[i--]! : tail[j--]!;
  let w = 0;
  for (let k = 0; k < n; k++) if (w === 0 || list[w - 1] !== list[k]) list[w++] = list[k]!;
  list.length = w;
  idx.sortedLen[slot] = w;
  return list;
}

/** Reused sort buffer of {@link sortedRs} (scratch only: never holds state between calls). */
let scratch = new Float64Array(64);

/** RS ids where the copy in `slot` is listed (any role), verified, ascending (compacts the list). */
export function listedRs(idx: AppIndex, slot: number, current: readonly RsAssignment[]): number[] {
  const id = idx.ids[slot]!;
  const out: number[] = [];
  for (const r of sortedRs(idx, slot)) if (listedIn(current[r]!.members, id)) out.push(r);
  idx.rsOf[slot] = out.slice();
  idx.sortedLen[slot] = out.length;
  return out;
}

/** The index of `app` for read-only use (built and cached on first use). */
export function peekIndex(app: AppState): AppIndex {
  let idx = cache.get(app.rs);
  if (idx === undefined) {
    idx = buildIndex(app);
    cache.set(app.rs, idx);
  } else if (idx.k !== app.spec.standbys) setStandbyTarget(idx, app.rs, app.activated, app.spec.standbys);
  return idx;
}

/** Takes ownership of the index of `app` for in-place updates (see module doc). */
export function takeIndex(app: AppState): AppIndex {
  const idx = peekIndex(app);
  cache.delete(app.rs);
  return idx;
}

/** Hands an (updated) index to the `rs` array it now describes. */
export function storeIndex(rs: readonly RsAssignment[], idx: AppIndex): void {
  cache.set(rs, idx);
}
