/**
 * Helpers for ordered RS member lists. A list is always
 * `[ACTIVE?, STANDBY…(promotion order), OUT_OF_SERVICE…(oldest first)]`, a copy at most once.
 */
import type { Member, Role } from './model';

/**
 * At most this many OUT_OF_SERVICE entries are kept per RS. They are history for operators
 * (R-DFM-4 "old primary at the end, marked non-operational"); keeping more would let lists grow
 * without bound under churn, so the oldest are dropped first.
 */
export const MAX_OOS_ENTRIES = 2;

/** A member list split by role. */
export interface ParsedMembers {
  readonly active: string | null;
  readonly standbys: readonly string[];
  readonly oos: readonly string[];
}

/** Splits an ordered member list by role (keeps order inside each role). */
export function parseMembers(members: readonly Member[]): ParsedMembers {
  let active: string | null = null;
  const standbys: string[] = [];
  const oos: string[] = [];
  for (let i = 0; i < members.length; i++) {
    const m = members[i]!;
    if (m.role === 'ACTIVE') active = m.copyId;
    else if (m.role === 'STANDBY') standbys.push(m.copyId);
    else oos.push(m.copyId);
  }
  return { active, standbys, oos };
}

/**
 * Interns `Member` objects for the duration of one decision. Placement creates hundreds of
 * thousands of members over a few hundred copies; sharing the immutable objects keeps
 * allocation (and GC pauses in the controller) proportional to the copy count.
 */
export class MemberPool {
  // One map per role: a lookup needs no key string built per call.
  private readonly active = new Map<string, Member>();
  private readonly standby = new Map<string, Member>();
  private readonly oos = new Map<string, Member>();
  /** The shared `{copyId, role}` object. */
  get(copyId: string, role: Role): Member {
    const byId = role === 'ACTIVE' ? this.active : role === 'STANDBY' ? this.standby : this.oos;
    let m = byId.get(copyId);
    if (m === undefined) {
      m = { copyId, role };
      byId.set(copyId, m);
    }
    return m;
  }
}

/**
 * Builds a normalised member list: a copy listed as ACTIVE/STANDBY loses its OOS entry, OOS
 * duplicates keep their newest position, and only the newest {@link MAX_OOS_ENTRIES} OOS
 * entries survive.
 */
export function buildMembers(
  pool: MemberPool,
  active: string | null,
  standbys: readonly string[],
  oos: readonly string[],
): Member[] {
  const out: Member[] = [];
  if (active !== null) out.push(pool.get(active, 'ACTIVE'));
  for (const s of standbys) out.push(pool.get(s, 'STANDBY'));
  if (oos.length > 0) {
    // Walk from the newest end so that duplicates keep their latest position.
    const kept: string[] = [];
    for (let i = oos.length - 1; i >= 0 && kept.length < MAX_OOS_ENTRIES; i--) {
      const id = oos[i]!;
      if (id === active || standbys.includes(id) || kept.includes(id)) continue;
      kept.push(id);
    }
    for (let i = kept.length - 1; i >= 0; i--) out.push(pool.get(kept[i]!, 'OUT_OF_SERVICE'));
  }
  return out;
}

/**
 * Builds one member list at a time in reused storage. `take` copies it out with `slice`, which
 * gives an exact-size packed array: a list grown by `push` from `[]` reserves room for 17
 * members, and `length = 0` on a scratch array drops its storage. A failure builds thousands of
 * lists, so this is most of its allocation.
 */
export class MemberBuf {
  private readonly a: Member[] = [];
  /** Number of members in the list being built. */
  n = 0;
  /** Starts a new list. */
  reset(): this {
    this.n = 0;
    return this;
  }
  push(m: Member): void {
    this.a[this.n++] = m;
  }
  at(i: number): Member {
    return this.a[i]!;
  }
  /** The backing storage: members 0..n-1 are the list (valid until the next write). */
  get items(): readonly Member[] {
    return this.a;
  }
  /** True when one of the first `n` members is `copyId`. */
  has(copyId: string, n = this.n): boolean {
    for (let i = 0; i < n; i++) if (this.a[i]!.copyId === copyId) return true;
    return false;
  }
  /** The list built so far, as a new exact-size array. */
  take(): Member[] {
    return this.a.slice(0, this.n);
  }
}

/**
 * Appends to `out` (the live part of a list: ACTIVE?, STANDBYs) the OUT_OF_SERVICE entries of
 * `cur` (its first `curLen` members) whose copy is neither in `out` nor in `removed`, then the `demoted` copies (as
 * OUT_OF_SERVICE, in order), keeping only the newest {@link MAX_OOS_ENTRIES}: the list
 * `buildMembers` gives for these parts, without its intermediate id arrays (this runs for every
 * RS a failure touches).
 */
export function appendOos(
  pool: MemberPool,
  out: MemberBuf,
  cur: readonly Member[],
  curLen: number,
  demoted: MemberBuf | null = null,
  removed: ReadonlySet<string> | null = null,
): void {
  const live = out.n;
  const nd = demoted === null ? 0 : demoted.n;
  let cand = nd;
  for (let i = 0; i < curLen; i++) if (keptOos(cur[i]!, out, live, demoted, removed)) cand++;
  let skip = cand - MAX_OOS_ENTRIES;
  for (let i = 0; i < curLen; i++) {
    const m = cur[i]!;
    if (!keptOos(m, out, live, demoted, removed)) continue;
    if (skip-- > 0) continue;
    out.push(m);
  }
  for (let i = 0; i < nd; i++) {
    if (skip-- > 0) continue;
    const m = demoted!.at(i);
    out.push(m.role === 'OUT_OF_SERVICE' ? m : pool.get(m.copyId, 'OUT_OF_SERVICE'));
  }
}

function keptOos(m: Member, out: MemberBuf, live: number, demoted: MemberBuf | null, removed: ReadonlySet<string> | null): boolean {
  return m.role === 'OUT_OF_SERVICE' && !out.has(m.copyId, live) && (demoted === null || !demoted.has(m.copyId)) && (removed === null || !removed.has(m.copyId));
}

/** Structural equality of two member lists (same copies, same roles, same order). */
export function sameMembers(a: readonly Member[], b: readonly Member[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i]!.copyId !== b[i]!.copyId || a[i]!.role !== b[i]!.role) return false;
  }
  return true;
}

/** The role of `copyId` in the list, or `null` when it is not listed. */
export function roleOf(members: readonly Member[], copyId: string): Role | null {
  // Indexed: member lists come in several array shapes, and a polymorphic for-of allocates.
  for (let i = 0; i < members.length; i++) if (members[i]!.copyId === copyId) return members[i]!.role;
  return null;
}

/**
 * Own property of a record, or undefined: ids like "constructor" must never resolve to
 * Object.prototype members.
 */
export function own<T>(rec: Readonly<Record<string, T>>, key: string | number): T | undefined {
  return Object.prototype.hasOwnProperty.call(rec, key) ? rec[key] : undefined;
}

/** Deterministic string order (code units), independent of locale. */
export function cmpStr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
