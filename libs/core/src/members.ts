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
  for (const m of members) {
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
  private readonly byKey = new Map<string, Member>();
  /** The shared `{copyId, role}` object. */
  get(copyId: string, role: Role): Member {
    const key = role[0] + copyId;
    let m = this.byKey.get(key);
    if (m === undefined) {
      m = { copyId, role };
      this.byKey.set(key, m);
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
  for (const m of members) if (m.copyId === copyId) return m.role;
  return null;
}

/**
 * Own property of a record, or undefined: ids like "constructor" must never resolve to
 * Object.prototype members.
 */
export function own<T>(rec: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.prototype.hasOwnProperty.call(rec, key) ? rec[key] : undefined;
}

/** Deterministic string order (code units), independent of locale. */
export function cmpStr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
