/**
 * Derived per-application indexes: copy → RS it is listed in, per-copy ACTIVE/STANDBY counts, and
 * the RS that need repair. They are pure functions of an `AppState`, never persisted, and cached
 * in a WeakMap keyed by the app's `rs` array so that a decision touching 300 of 100,000 RS does
 * not rescan all of them.
 *
 * Ownership rule: a decision *takes* the index of the state it starts from, updates it in place
 * as it writes RS, and stores it under the new `rs` array. Deciding again on the older state
 * later simply rebuilds its index (correct, only slower), so callers never observe stale data.
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
  /** slot → RS ids where the copy is listed (any role, OUT_OF_SERVICE included). */
  readonly rsOf: Set<number>[];
  /** RS without an ACTIVE or with a standby count different from `k` (to repair). */
  deficient: Set<number>;
}

const cache = new WeakMap<readonly RsAssignment[], AppIndex>();

function isDeficient(members: readonly Member[], k: number): boolean {
  let active = 0;
  let sb = 0;
  for (const m of members) {
    if (m.role === 'ACTIVE') active++;
    else if (m.role === 'STANDBY') sb++;
  }
  return active === 0 || sb !== k;
}

/** Slot of `copyId`, allocating one (and growing the counters) when first seen. */
export function ensureSlot(idx: AppIndex, copyId: string): number {
  let s = idx.slotOf.get(copyId);
  if (s !== undefined) return s;
  s = idx.ids.length;
  idx.slotOf.set(copyId, s);
  idx.ids.push(copyId);
  idx.rsOf.push(new Set());
  if (s >= idx.act.length) {
    const cap = Math.max(16, idx.act.length * 2);
    const act = new Int32Array(cap);
    act.set(idx.act);
    const sb = new Int32Array(cap);
    sb.set(idx.sb);
    idx.act = act;
    idx.sb = sb;
  }
  return s;
}

/** Builds the index of `app` from scratch (O(total members)). */
export function buildIndex(app: AppState): AppIndex {
  const idx: AppIndex = {
    k: app.spec.standbys,
    slotOf: new Map(),
    ids: [],
    rsOf: [],
    act: new Int32Array(16),
    sb: new Int32Array(16),
    deficient: new Set(),
  };
  for (const a of app.rs) {
    for (const m of a.members) {
      const s = ensureSlot(idx, m.copyId);
      idx.rsOf[s]!.add(a.rs);
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

/** Updates the index for RS `rs` whose members change from `before` to `after`. */
export function applyChange(idx: AppIndex, rs: number, before: readonly Member[], after: readonly Member[]): void {
  for (const m of before) {
    const s = idx.slotOf.get(m.copyId)!;
    idx.rsOf[s]!.delete(rs);
    if (m.role === 'ACTIVE') idx.act[s]!--;
    else if (m.role === 'STANDBY') idx.sb[s]!--;
  }
  for (const m of after) {
    const s = ensureSlot(idx, m.copyId);
    idx.rsOf[s]!.add(rs);
    if (m.role === 'ACTIVE') idx.act[s]!++;
    else if (m.role === 'STANDBY') idx.sb[s]!++;
  }
  if (isDeficient(after, idx.k)) idx.deficient.add(rs);
  else idx.deficient.delete(rs);
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
