/**
 * Level-triggered repair. Events only change copy statuses and specs; `reconcile` then brings
 * every application back to a healthy, balanced shape:
 *
 * 1. activation — an app with ≥ minCopies UP copies gets its initial distribution;
 * 2. demotion — ACTIVE/STANDBY entries on copies that are not UP (or whose process was replaced)
 *    go to the end of the list as OUT_OF_SERVICE (R-DFM-4); drained and removed copies disappear;
 * 3. repair — an RS without ACTIVE promotes its first UP standby (epoch+1), or, with no standby,
 *    gets a new ACTIVE on the least-loaded UP copy (epoch+1, it restores from a checkpoint);
 *    missing standbys are added on least-loaded copies (preferring other hosts);
 * 4. balance — for the apps the event asked for (membership changes) and apps whose previous
 *    balancing is pending: see `balance`.
 */
import type { CopyInfo, Member } from './model';
import type { Tx, AppTx } from './tx';
import { ensureSlot, listedRs, sortedRs } from './derived';
import { appendOos, buildMembers, cmpStr, MemberBuf, parseMembers, roleOf } from './members';
import { Board, mix32, placeInitial, spreadBinds } from './placement';
import { standbyMoveHolds } from './tx';
import { keyToRs } from './hash';

/** Phase T fallback moves under host spread per decision (see `balance`). */
const SPREAD_FALLBACKS_PER_DECISION = 32;

/** Index of the first element ≥ x in an ascending list. */
function lowerBound(list: readonly number[], x: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Runs reconcile over every app (while passive: only fences replaced processes, see below). */
export function reconcile(tx: Tx): void {
  if (tx.leader.passive) {
    // R-HM-3: no recovery and no balancing while passive. A re-registered copy is a new process
    // without state, though, so its old entries are demoted at once: it must never keep (or be
    // promoted into) an RS it held before. Promotions wait for the end of the passive phase.
    const apps = new Set<string>();
    for (const id of tx.fenced) {
      const c = tx.copy(id);
      if (c !== undefined) apps.add(c.app);
    }
    for (const name of [...apps].sort(cmpStr)) {
      const at = tx.app(name);
      if (at !== undefined) demote(tx, at, true, null);
    }
    return;
  }
  for (const name of tx.appNames()) reconcileApp(tx, tx.app(name)!);
}

function reconcileApp(tx: Tx, at: AppTx): void {
  const ups = tx.upCopies(at.name);
  if (!at.activated) {
    if (ups.length > 0 && ups.length >= at.spec.minCopies) activate(tx, at, ups);
    return;
  }
  const idx = at.idx();
  for (const c of ups) ensureSlot(idx, c.copyId);
  const board = new Board(ups, idx, (id) => idx.slotOf.get(id)!);
  if (at.spec.mode === 'FAULT_TOLERANT') {
    demote(tx, at, false, null);
    repairFaultTolerant(tx, at, board);
    return;
  }
  const k = at.spec.mode === 'DISTRIBUTED' ? 0 : at.spec.standbys;
  const repair: Repair = { board, k, live: [], sbs: new MemberBuf(), out: new MemberBuf(), activate: false, at, r: -1, unsynced: 0 };
  // Fused with the demotion when it can be (see `demote`); otherwise repairs follow it here.
  if (!demote(tx, at, false, repair)) {
    const todo = sortedDeficient(at);
    for (let i = 0; i < todo.length; i++) repairRs(tx, at, todo[i]!, repair);
  }
  if (repair.unsynced > 0) {
    tx.notes.push(
      `app ${at.name}: ${repair.unsynced} RS had no caught-up standby left; promoted one still catching up ` +
        `(it recovers the state from the RS's other members or its checkpoint)`,
    );
  }
  if (tx.balance === 'all' || tx.balance.has(at.name) || at.balancePending) balance(tx, at, board, k);
}

/** RS ids to repair, ascending (the repair order). */
function sortedDeficient(at: AppTx): Int32Array {
  const d = at.idx().deficient;
  const todo = new Int32Array(d.size);
  let n = 0;
  d.forEach((r) => (todo[n++] = r));
  return todo.sort();
}

function activate(tx: Tx, at: AppTx, ups: readonly CopyInfo[]): void {
  at.activated = true;
  const placed = placeInitial(at.spec, ups, tx.pool);
  for (let r = 0; r < placed.length; r++) if (placed[r]!.length > 0) at.put(r, placed[r]!, true);
  tx.notes.push(`app ${at.name} activated: ${at.rsCount} RS over ${ups.length} UP copies (${at.spec.mode}, standbys=${at.spec.standbys})`);
}

/**
 * Step 2: demote entries of copies that may not hold roles. `fencedOnly` = passive phase: only
 * copies replaced by a new incarnation.
 *
 * With `repair` (not passive, not FAULT_TOLERANT), step 3 is fused in when none of the demoted
 * copies is UP: every RS to repair is then visited once, in ascending order, and written once
 * (a failure touches thousands of RS, and every write costs an assignment, a member list and an
 * index update). The picks are the same as demoting everything first: demoting copies that are
 * not on the board changes no count a pick reads. Returns true when it repaired.
 */
function demote(tx: Tx, at: AppTx, fencedOnly: boolean, repair: Repair | null): boolean {
  if (!at.activated) return false;
  const idx = at.idx();
  const bad = new Map<string, 'remove' | 'demote'>();
  let onBoard = false;
  for (let slot = 0; slot < idx.ids.length; slot++) {
    if (idx.listed[slot] === 0) continue;
    const id = idx.ids[slot]!;
    const live = idx.act[slot]! + idx.sb[slot]! > 0;
    if (fencedOnly) {
      if (live && tx.fenced.has(id)) bad.set(id, 'demote');
      continue;
    }
    const c = tx.copy(id);
    if (c === undefined || c.app !== at.name || c.status === 'DRAINED') bad.set(id, 'remove');
    else if (live && (c.status !== 'UP' || tx.fenced.has(id))) {
      bad.set(id, 'demote');
      if (c.status === 'UP') onBoard = true;
    }
  }
  if (bad.size === 0) return false;
  const fuse = repair !== null && !onBoard;
  const pre = fuse ? sortedDeficient(at) : null;
  let affected: ArrayLike<number>;
  // Copy the RS array before loading the RS to change: copying 100,000 slots evicts much of
  // the CPU cache. The verification loop of `listedRs` is tight, so the CPU overlaps the cache
  // misses of many RS; the demotion loop below then finds them cached.
  at.clone();
  if (bad.size === 1) {
    // The common case (one copy failed): its verified list is already ascending.
    affected = listedRs(idx, idx.slotOf.get(bad.keys().next().value!)!, at.current);
  } else {
    const set = new Set<number>();
    for (const id of bad.keys()) for (const r of listedRs(idx, idx.slotOf.get(id)!, at.current)) set.add(r);
    affected = Int32Array.from(set).sort();
  }
  let removed: Set<string> | null = null;
  for (const [id, what] of bad) if (what === 'remove') (removed ??= new Set()).add(id);
  // FAULT_TOLERANT RS share one member array: compute each distinct input once.
  const memo = new Map<readonly Member[], Member[]>();
  const ft = at.spec.mode === 'FAULT_TOLERANT';
  const fenced = tx.fenced;
  const live = new MemberBuf();
  const demoted = new MemberBuf();
  // One copy (a failure): a string compare per member instead of a map lookup.
  const one = bad.size === 1 ? bad.keys().next().value! : null;
  const oneWhat = one === null ? undefined : bad.get(one);
  let p = 0; // next in `pre` (fused: RS that needed repair before this decision, merged in order)
  for (let i = 0; i < affected.length; i++) {
    const r = affected[i]!;
    const cur = at.get(r).members;
    if (pre !== null) {
      for (; p < pre.length && pre[p]! <= r; p++) if (pre[p]! < r) repairRs(tx, at, pre[p]!, repair!);
    }
    let fencedHere = false;
    if (fenced.size > 0) for (let j = 0; j < cur.length; j++) if (cur[j]!.role !== 'OUT_OF_SERVICE' && fenced.has(cur[j]!.copyId)) fencedHere = true;
    const lostActive = cur.length > 0 && cur[0]!.role === 'ACTIVE' && (cur[0]!.copyId === one || (one === null && bad.has(cur[0]!.copyId)));
    let next = ft ? memo.get(cur) : undefined;
    if (next === undefined) {
      // List order = demotion order: the old active goes to the end first, then its standbys.
      live.reset();
      demoted.reset();
      for (let j = 0; j < cur.length; j++) {
        const m = cur[j]!;
        if (m.role === 'OUT_OF_SERVICE') continue;
        const what = m.copyId === one ? oneWhat : one === null ? bad.get(m.copyId) : undefined;
        if (what === undefined) live.push(m);
        else if (what === 'demote') demoted.push(m);
      }
      appendOos(tx.pool, live, cur, cur.length, demoted, removed);
      if (fuse) repair!.r = r;
      if (fuse && repairList(tx, live.items, live.n, repair!)) {
        at.put(r, repair!.out.take(), repair!.activate);
        next = EMPTY_LIST;
      } else next = live.take();
      if (ft) memo.set(cur, next);
    }
    if (next !== EMPTY_LIST) at.put(r, next, false);
    if (lostActive) at.markFailedOver(r);
    // A replaced process must hear about every RS it is (re-)listed in even when the final list
    // looks unchanged (e.g. demoted, then re-added as STANDBY): it is a new process without state.
    if (fencedHere) at.touch(r);
  }
  if (pre !== null) for (; p < pre.length; p++) repairRs(tx, at, pre[p]!, repair!);
  return fuse;
}

/** Marker: the RS was already written (fused repair). */
const EMPTY_LIST: Member[] = [];

/**
 * Step 3 context: the board and standby target, plus scratch reused across RS (a failure repairs
 * thousands of them).
 */
interface Repair {
  readonly board: Board;
  readonly k: number;
  /** Positions of the RS's live members. */
  readonly live: number[];
  readonly sbs: MemberBuf;
  /** The repaired list (see {@link repairList}). */
  readonly out: MemberBuf;
  /** Whether the repaired list activates a member (new epoch). */
  activate: boolean;
  readonly at: AppTx;
  /** The RS being repaired. */
  r: number;
  /** Promotions of a standby still catching up (no caught-up one was left), for the notes. */
  unsynced: number;
}

/** Step 3 for one DISTRIBUTED / DISTRIBUTED_FAULT_TOLERANT RS. */
function repairRs(tx: Tx, at: AppTx, r: number, repair: Repair): void {
  const cur = at.get(r).members;
  repair.r = r;
  if (repairList(tx, cur, cur.length, repair)) at.put(r, repair.out.take(), repair.activate);
}

/**
 * Repairs the list `cur[0..curLen)` into `repair.out`: no ACTIVE → the first standby is promoted
 * (or a new ACTIVE is picked when there is none); too many standbys → the last are dropped; too
 * few → least-loaded picks. Returns false when the list needs nothing.
 */
function repairList(tx: Tx, cur: readonly Member[], curLen: number, repair: Repair): boolean {
  const { board, k } = repair;
  const sbs = repair.sbs.reset();
  let active: Member | null = null;
  for (let i = 0; i < curLen; i++) {
    const m = cur[i]!;
    if (m.role === 'ACTIVE') active = m;
    else if (m.role === 'STANDBY') sbs.push(m);
  }
  let first = 0; // standbys are sbs[first..n): the first one may be promoted
  let activate = false;
  if (active === null) {
    // R-DFM-4: first healthy backup becomes primary — healthy meaning caught up too: a standby
    // still catching up lacks acknowledged updates. Only when none is caught up does the first
    // one take over (the state then has to come from another member or the checkpoint).
    if (sbs.n > 0) {
      let pick = 0;
      while (pick < sbs.n && repair.at.isSyncing(repair.r, sbs.at(pick).copyId)) pick++;
      if (pick === sbs.n) {
        pick = 0;
        repair.unsynced++;
      }
      const chosen = sbs.at(pick);
      // Keep the others' promotion order: shift the ones before the pick down by one.
      for (let i = pick; i > 0; i--) (sbs.items as Member[])[i] = sbs.at(i - 1);
      first = 1;
      active = tx.pool.get(chosen.copyId, 'ACTIVE');
    }
    else if (board.n > 0) active = tx.pool.get(board.ids[board.pickActive([])]!, 'ACTIVE');
    activate = active !== null;
  }
  let changed = activate;
  // A pending move lists its target as one standby above the factor until it is caught up.
  let kk = k;
  if (active !== null && repair.r >= 0) {
    // A pending standby move lists its leaving standby until the new one is caught up.
    const sm = repair.at.standbyMoveOf(repair.r);
    if (sm !== undefined) {
      let both = 0;
      let toAt = -1;
      for (let i = first; i < sbs.n; i++) {
        if (sbs.at(i).copyId === sm.fromCopyId) both++;
        else if (sbs.at(i).copyId === sm.toCopyId) {
          both++;
          toAt = i;
        }
      }
      if (both === 2 && sbs.n - first <= k + 1) kk = k + 1;
      else if (both === 2) {
        // The factor was lowered mid-move: the move is moot, its new standby (no state yet) goes.
        repair.at.setStandbyMove(repair.r, undefined);
        const items = sbs.items as Member[];
        for (let i = toAt; i + 1 < sbs.n; i++) items[i] = items[i + 1]!;
        sbs.n--;
        board.totalsDecreased();
        changed = true;
      }
    }
  }
  if (active !== null && !activate && repair.r >= 0) {
    const mv = repair.at.moveOf(repair.r);
    if (mv !== undefined && mv.fromCopyId === active.copyId) {
      let at = -1;
      for (let i = first; i < sbs.n; i++) if (sbs.at(i).copyId === mv.toCopyId) at = i;
      if (at >= 0) {
        kk = k + 1;
        // The spec lowered mid-move: trim the others, keep the target (it goes last).
        if (sbs.n - first > kk) {
          const target = sbs.at(at);
          const items = sbs.items as Member[];
          let w = first; // in place: w never passes the read position
          for (let i = first; i < sbs.n && w < first + k; i++) if (items[i] !== target) items[w++] = items[i]!;
          items[w++] = target;
          sbs.n = w;
          board.totalsDecreased();
          changed = true;
        }
      }
    }
  }
  if (sbs.n - first > kk) {
    sbs.n = first + kk; // spec lowered (or a move abandoned): drop the last in promotion order.
    board.totalsDecreased();
    changed = true;
  }
  if (active !== null && sbs.n - first < kk) {
    // Indexed writes into reused scratch (`length = 0` would drop its storage).
    const live = repair.live;
    let n = 0;
    live[n++] = board.posOf.get(active.copyId)!;
    for (let i = first; i < sbs.n; i++) live[n++] = board.posOf.get(sbs.at(i).copyId)!;
    while (sbs.n - first < kk && n < board.n) {
      const pos = board.pickStandby(live, n);
      if (pos < 0) break;
      live[n++] = pos;
      sbs.push(tx.pool.get(board.ids[pos]!, 'STANDBY'));
      changed = true;
    }
  }
  if (!changed) return false;
  const out = repair.out.reset();
  if (active !== null) out.push(active);
  for (let i = first; i < sbs.n; i++) out.push(sbs.at(i));
  appendOos(tx.pool, out, cur, curLen);
  repair.activate = activate;
  return true;
}

/** Step 3 for a FAULT_TOLERANT app: one list for all RS, computed once. */
function repairFaultTolerant(tx: Tx, at: AppTx, board: Board): void {
  const k = at.spec.standbys;
  const p = parseMembers(at.get(0).members);
  let active = p.active;
  const sbs = [...p.standbys];
  let activate = false;
  if (active === null) {
    // One list for every RS: the standby copy catching up in the fewest RS (none, normally;
    // see `repairList`), the first in promotion order among equals.
    const behind = at.syncingCounts();
    let pick = 0;
    for (let i = 1; i < sbs.length; i++) if ((behind.get(sbs[i]!) ?? 0) < (behind.get(sbs[pick]!) ?? 0)) pick = i;
    if (sbs.length > 0) active = sbs.splice(pick, 1)[0]!;
    else if (board.n > 0) active = board.ids[0]!; // first eligible copy by id
    activate = active !== null;
  }
  if (sbs.length > k) sbs.length = k;
  if (active !== null && sbs.length < k) {
    const used = new Set([active, ...sbs]);
    const hosts = new Set<number>();
    for (const id of used) hosts.add(board.host[board.posOf.get(id)!]!);
    for (const pass of [0, 1]) {
      for (let i = 0; i < board.n && sbs.length < k; i++) {
        const id = board.ids[i]!;
        if (used.has(id) || (pass === 0 && hosts.has(board.host[i]!))) continue;
        used.add(id);
        hosts.add(board.host[i]!);
        sbs.push(id);
      }
    }
  }
  if (!activate && sbs.length === p.standbys.length && sbs.every((s, i) => s === p.standbys[i])) return;
  const members = buildMembers(tx.pool, active, sbs, p.oos);
  for (let r = 0; r < at.rsCount; r++) at.put(r, members, activate);
}

/**
 * Step 4: balance a DISTRIBUTED or DISTRIBUTED_FAULT_TOLERANT app over its UP copies.
 *
 * Phase T brings total counts (ACTIVE+STANDBY) within 1 by moving standbys from the heaviest to
 * the lightest copies (cheap: no epoch change); DISTRIBUTED apps move actives instead (epoch+1,
 * the new copy restores from its checkpoint).
 * Phase A then brings active counts within 1 by swapping an active with one of its standbys on a
 * lighter copy (a switchover: epoch+1, totals unchanged), directly or through a chain of swaps.
 *
 * Safety rules for swaps: only a standby that held the RS when the decision started may be
 * promoted (a standby added in the same decision has no state yet), never a replaced process,
 * and never in an RS that failed over in this decision (R-DFM-4: its first standby took over).
 * When the only remaining swaps would break these rules, balancing stops with
 * `balancePending` and the next Tick resumes it (by then the new standbys exist); if no swap is
 * possible at all, one standby per heaviest copy is first moved next to one of its actives.
 *
 * Every move strictly lowers the sum of squared counts, so both phases terminate; the guards only
 * protect against bugs. Moves are deterministic: copies by position, RS in ascending order.
 */
function balance(tx: Tx, at: AppTx, board: Board, k: number): void {
  const n = board.n;
  const resumed = at.balancePending;
  at.balancePending = false;
  if (n < 2) return;
  const deferSwaps = tx.deferSwaps.has(at.name);
  let deferred = false;
  const idx = at.idx();
  const st = { standbyMoves: 0, activeMoves: 0, swaps: 0 };
  const ids = board.ids;
  const idHash = new Map<number, number>();
  /**
   * Where a scan of copy p's RS list starts: a deterministic pseudo-random RS id (hash of the
   * copy id and a move counter). Always starting at RS 0 would take every move from the same
   * low RS ids, which cluster structurally (block 0 of the placement) and would concentrate
   * the next failover on a few copies.
   */
  const spin = (p: number, counter: number): number => {
    let h = idHash.get(p);
    if (h === undefined) idHash.set(p, (h = keyToRs(ids[p]!, 0x7fffffff)));
    return mix32(h ^ Math.imul(counter + 1, 0x9e3779b1)) % at.rsCount;
  };
  // Pending standby moves count as done: their leaving standby stays listed (make-before-break,
  // `AppState.standbyMoves`) but no longer counts towards its copy's total.
  const leave = new Int32Array(n);
  const sbMoves = at.standbyMoves();
  for (const key in sbMoves) {
    const mv = sbMoves[key]!;
    const p = board.posOf.get(mv.fromCopyId);
    const m = at.get(Number(key)).members;
    // It leaves only if the RS keeps its factor without it (see `completeStandbyMove`).
    if (p !== undefined && standbyMoveHolds(mv, m) && parseMembers(m).standbys.length > k) leave[p]++;
  }
  const tot = (p: number): number => board.tot(p) - leave[p]!;
  /** [heaviest, lightest] total over the copies. */
  const totalRange = (): [number, number] => {
    let max = -1;
    let min = 0x7fffffff;
    for (let i = 0; i < n; i++) {
      const t = tot(i);
      if (t > max) max = t;
      if (t < min) min = t;
    }
    return [max, min];
  };
  /** Host number → copies of the board on it. */
  const hostSize = new Int32Array(n);
  for (let i = 0; i < n; i++) hostSize[board.host[i]!]++;
  /** See `spreadBinds`: when true, balancing never makes an RS's host spread worse. */
  const spreadFeasible = spreadBinds(hostSize, k);
  const live = (members: readonly Member[], skip: number): number[] => {
    const out: number[] = [];
    for (const m of members) {
      if (m.role === 'OUT_OF_SERVICE') continue;
      const p = board.posOf.get(m.copyId);
      if (p !== undefined && p !== skip) out.push(p);
    }
    return out;
  };
  /** True when a member at position p shares its host with one of `others`. */
  const hostClash = (others: readonly number[], p: number): boolean => others.some((o) => board.host[o] === board.host[p]);
  /**
   * First light copy (in `light` order) that could replace h in `members`. Strict: on a host the
   * other members do not use. Otherwise: the RS's host spread must not get worse (a host fault
   * would take more of it), so a copy on a used host only replaces one on a used host.
   */
  const firstLight = (members: readonly Member[], h: number, light: readonly number[], strict: boolean): number => {
    const others = live(members, h);
    const limit = tot(h) - 2;
    const hWasClash = !spreadFeasible || hostClash(others, h);
    for (const l of light) {
      if (l === h || tot(l) > limit || others.includes(l)) continue;
      if (hostClash(others, l) && (strict || !hWasClash)) continue;
      return l;
    }
    return -1;
  };
  /** May the copy at position p be promoted in RS r by balancing? (see rules above) */
  // RS with a pending move (issue 5) keep their members until the move completes or is abandoned.
  const moving = at.hasMoves();
  let sbMoving = at.hasStandbyMoves();
  const sbPending = (r: number): boolean => {
    const mv = at.standbyMoveOf(r);
    return mv !== undefined && standbyMoveHolds(mv, at.get(r).members);
  };
  const still = (r: number): boolean => (!moving || at.moveOf(r) === undefined) && (!sbMoving || !sbPending(r));
  /**
   * Replaces standby `from` of RS r by copy `to`, make-before-break: `to` is listed next to
   * `from`, which leaves once the active reports `to` caught up (`AppState.standbyMoves`). At
   * epoch 0 (nothing acknowledged yet) every member holds the whole state: `from` leaves at once.
   * `active` becomes (or stays) the RS's ACTIVE; `sbs` are its standbys, `from` included.
   */
  const moveStandby = (r: number, active: string, sbs: readonly string[], oos: readonly string[], from: string, to: string, activate: boolean): void => {
    at.put(r, buildMembers(tx.pool, active, [...sbs, to], oos), activate);
    if (sbs.length < k) {
      // Under-replicated (too few copies before): `to` is simply one more standby.
    } else if (at.isSyncing(r, to)) {
      at.setStandbyMove(r, { fromCopyId: from, toCopyId: to, sinceMs: tx.now });
      sbMoving = true;
      const p = board.posOf.get(from);
      if (p !== undefined) leave[p]++;
    } else at.put(r, buildMembers(tx.pool, active, sbs.filter((x) => x !== from).concat(to), oos), activate);
    st.standbyMoves++;
  };
  const promotable = (r: number, p: number): boolean =>
    still(r) && !at.failedOver(r) && !tx.fenced.has(ids[p]!) && at.hadState(r, ids[p]!) && !at.isSyncing(r, ids[p]!);
  const swap = (r: number, to: number): void => {
    // `to` (a STANDBY) becomes ACTIVE; the old active takes its place in the promotion order.
    const p = parseMembers(at.get(r).members);
    const sbs = p.standbys.map((s) => (s === ids[to] ? p.active! : s));
    at.put(r, buildMembers(tx.pool, ids[to]!, sbs, p.oos), true);
    st.swaps++;
  };

  /** Moves one entry of heavy copy h (STANDBY, or ACTIVE for DISTRIBUTED) to a lighter copy. */
  const shedFrom = (h: number, light: readonly number[]): boolean => {
    const wanted = k === 0 ? 'ACTIVE' : 'STANDBY';
    for (const strict of [true, false]) {
      // The first fit from a spun start (canonical: rsOf lists are ascending, see derived.ts).
      let bestR = -1;
      let bestL = -1;
      const list = sortedRs(idx, board.slot[h]!);
      const len = list.length;
      const s0 = lowerBound(list, spin(h, st.standbyMoves + st.activeMoves));
      for (let q = 0; q < len; q++) {
        const r = list[(s0 + q) % len]!;
        const m = at.get(r).members;
        if (roleOf(m, ids[h]!) !== wanted || !still(r)) continue;
        const l = firstLight(m, h, light, strict);
        if (l >= 0) {
          bestR = r;
          bestL = l;
          break;
        }
      }
      if (bestR < 0) continue;
      const p = parseMembers(at.get(bestR).members);
      if (k === 0) {
        at.put(bestR, buildMembers(tx.pool, ids[bestL]!, [], p.oos), true);
        st.activeMoves++;
      } else moveStandby(bestR, p.active!, p.standbys, p.oos, ids[h]!, ids[bestL]!, false);
      return true;
    }
    return false;
  };

  if (spreadFeasible && (resumed || tx.respread === 'all' || tx.respread.has(at.name))) spread();

  let fallbacks = 0;
  let guard = at.rsCount * (1 + k) + n + 16;
  // Phase T: totals. One pass per load level: every heaviest copy sheds one entry, then the
  // levels are recomputed (O(copies) per pass, not per move).
  while (guard-- > 0) {
    const [max, min] = totalRange();
    if (max - min <= 1) break;
    const heavy: number[] = [];
    const lightest: number[] = [];
    const lighter: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = tot(i);
      if (t === max) heavy.push(i);
      else if (t === min) lightest.push(i);
      else if (t <= max - 2) lighter.push(i);
    }
    // Lightest copies first, then the other light ones (positions ascending within each).
    const light = lightest.concat(lighter);
    // Room left on the light copies: stop the pass when it is used up (no futile scans).
    let room = 0;
    for (const l of light) room += max - 1 - tot(l);
    let progress = 0;
    for (const h of heavy) {
      if (room <= 0) break;
      if (tot(h) === max && shedFrom(h, light)) {
        progress++;
        room--;
      }
    }
    if (progress > 0) continue;
    if (k === 0) break;
    if (handOff(heavy, light)) continue;
    if (spreadFeasible) {
      // The fallbacks cost a search over many copies each: a bounded number per decision, the
      // rest resumes on the next Tick.
      if (fallbacks >= SPREAD_FALLBACKS_PER_DECISION) {
        at.balancePending = true;
        break;
      }
      if (shedVia(heavy, light, max) || shedBelowTop(min)) {
        fallbacks++;
        continue;
      }
    }
    break;
  }

  if (sbMoving) {
    // RS with a pending standby move are left alone until it completes: resume on a later Tick
    // if the totals are still apart (the moves complete with the catch-up reports).
    const [max, min] = totalRange();
    if (max - min > 1) at.balancePending = true;
  }

  guard = at.rsCount * (1 + k) + n + 16;
  // Phase A: actives (DISTRIBUTED: equal to totals, already done). One pass per level from the
  // smaller side (the other side is then likely to be hit), then two-step swaps, then chains.
  while (k > 0 && guard-- > 0) {
    let max = -1;
    let min = 0x7fffffff;
    for (let i = 0; i < n; i++) {
      const a = board.act(i);
      if (a > max) max = a;
      if (a < min) min = a;
    }
    if (max - min <= 1) break;
    if (deferSwaps) {
      at.balancePending = true;
      deferred = true;
      break;
    }
    const heavy: number[] = [];
    const light: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = board.act(i);
      if (a === max) heavy.push(i);
      else if (a <= max - 2) light.push(i);
    }
    light.sort((a, b) => board.act(a) - board.act(b) || a - b);
    // Only copies that are a promotable standby somewhere can take an active now (a copy whose
    // standbys were all added in this decision cannot, yet). Checked when few copies are light
    // (a joining or restarted copy: exactly when it matters); with many, the searches below
    // verify each swap anyway and a few unusable targets cost little.
    const targets = light.length <= 64 ? light.filter(receptive) : light;
    if (targets.length > 0) {
      // One pass per level: every heaviest copy hands one active to a light standby, and every
      // light copy takes actives from heavier copies until it is one below the top. Starting
      // from the smaller side keeps the common cases cheap (a few promoted copies after a
      // failure; one new copy joining).
      let progress = 0;
      const heavyPass = (): void => {
        // Room left on the target copies: stop when it is used up (no futile scans).
        let room = 0;
        for (const l of targets) room += max - 1 - board.act(l);
        for (const h of heavy) {
          if (room <= 0) break;
          if (board.act(h) === max && heavySwap([h], max)) {
            progress++;
            room--;
          }
        }
      };
      const lightPass = (): void => {
        for (const l of targets) progress += fill(l, max);
      };
      if (heavy.length <= targets.length) {
        heavyPass();
        if (progress === 0) lightPass();
      } else {
        lightPass();
        if (progress === 0) heavyPass();
      }
      if (progress > 0) continue;
      // Costlier searches, bounded.
      if (heavy.length <= targets.length ? directSwap(targets) : heavy.length <= 64 && heavySwap(heavy, max)) continue;
      if (twoStepSwap(heavy, targets.filter((l) => board.act(l) === min).slice(0, 64))) continue;
      if (chainSwap(heavy, max)) continue;
    }
    // No promotable swap left. New standbys (from this decision) become promotable at the next
    // Tick; if there are none, prepare swaps by moving standbys next to heavy actives.
    let waiting = at.addedStandbys || at.hasSyncing(); // catching up: promotable once reported
    for (const id of tx.fenced) if (tx.copy(id)?.app === at.name) waiting = true; // a restarted process
    if (waiting) at.balancePending = true;
    else {
      let prepared = 0;
      for (const h of heavy) if (prepareSwap(h, light)) prepared++;
      at.balancePending = prepared > 0;
    }
    break;
  }
  if (guard < 0) at.balancePending = true;

  /**
   * Phase H: host spread. An RS with two live members on one host loses both to one host fault,
   * so its standby there moves (make-before-break) to the least-loaded copy on a host the RS does
   * not use. Only when every RS can be spread with balanced counts (no host holds more than
   * copies/(1+k) of them); Phase T then restores the counts without undoing the spread. Scans
   * only the RS of copies that share their host with another copy.
   */
  function spread(): void {
    // A pending standby move started before the spread could be had may end on a used host:
    // undo it (its new standby has no state yet); the loop below then places that RS properly.
    if (sbMoving) {
      const pending = at.standbyMoves();
      for (const key in pending) {
        const r = Number(key);
        const mv = pending[key]!;
        if (!sbPending(r)) continue;
        const m = at.get(r).members;
        const lv = live(m, -1);
        const from = board.posOf.get(mv.fromCopyId);
        const to = board.posOf.get(mv.toCopyId);
        if (from === undefined || to === undefined) continue;
        const rest = lv.filter((x) => x !== from && x !== to);
        if (!hostClash(rest, to) || hostClash(rest, from)) continue;
        if (abandonStandbyMove(tx, at, r, `it would leave two members on one host`)) {
          leave[from]--;
          st.standbyMoves++;
        }
      }
    }
    // One pass over the RS, without allocations until a clash is found (~20 ms at 100,000 RS in
    // bench/placement: why it runs only where the room for spread may have grown, `Tx.respread`).
    const hostAt = new Int32Array(8);
    const rsCount = at.rsCount;
    for (let r = 0; r < rsCount; r++) {
      const m = at.get(r).members;
      if (m.length < 2 || m[0]!.role !== 'ACTIVE') continue;
      let k2 = 0;
      let clash = false;
      for (let i = 0; i < m.length && k2 < hostAt.length; i++) {
        if (m[i]!.role === 'OUT_OF_SERVICE') continue;
        const p = board.posOf.get(m[i]!.copyId);
        if (p === undefined) continue;
        const h = board.host[p]!;
        for (let j = 0; j < k2; j++) if (hostAt[j] === h) clash = true;
        hostAt[k2++] = h;
      }
      if (!clash || !still(r) || at.failedOver(r)) continue;
      const lv = live(m, -1);
      if (lv.length !== m.filter((x) => x.role !== 'OUT_OF_SERVICE').length) continue; // a member off the board
      // The standby to move: the last one whose host an earlier member uses.
      let s = -1;
      for (let i = 1; i < lv.length; i++) if (hostClash(lv.slice(0, i), lv[i]!)) s = lv[i]!;
      if (s < 0) continue;
      const rest = lv.filter((x) => x !== s);
      let best = -1;
      for (let l = 0; l < n; l++) {
        if (lv.includes(l) || hostClash(rest, l)) continue;
        if (best < 0 || tot(l) < tot(best)) best = l;
      }
      if (best < 0) continue;
      const pm = parseMembers(m);
      moveStandby(r, pm.active!, pm.standbys, pm.oos, ids[s]!, ids[best]!, false);
    }
  }

  /**
   * Phase T fallback under host spread: the heaviest copies cannot shed, but a copy below the
   * top can (each move from a copy to one at least 2 lighter still lowers the sum of squared
   * totals). Sources heaviest first, targets lightest first.
   */
  function shedBelowTop(min: number): boolean {
    const order = Array.from({ length: n }, (_, i) => i);
    const down = order.filter((i) => tot(i) >= min + 2).sort((a, b) => tot(b) - tot(a) || a - b);
    const up = order.sort((a, b) => tot(a) - tot(b) || a - b);
    for (const h of down) if (shedFrom(h, up.filter((l) => tot(l) <= tot(h) - 2))) return true;
    return false;
  }

  /**
   * Phase T fallback under host spread: no light copy may replace a heavy copy's standby
   * directly (each would share a host with the RS's other members). Two standby moves through a
   * middle copy m one below the top: h → m in one RS, m → l in another. Totals: h −1, l +1.
   */
  function shedVia(heavy: readonly number[], light: readonly number[], max: number): boolean {
    const middle: number[] = [];
    for (let i = 0; i < n; i++) if (tot(i) === max - 1) middle.push(i);
    if (middle.length === 0) return false;
    for (const h of heavy) {
      for (const r1 of sortedRs(idx, board.slot[h]!)) {
        const m1 = at.get(r1).members;
        if (roleOf(m1, ids[h]!) !== 'STANDBY' || !still(r1)) continue;
        const others1 = live(m1, h);
        for (const m of middle) {
          if (others1.includes(m) || (hostClash(others1, m) && !hostClash(others1, h))) continue;
          // m hands one of its standbys (another RS) to a light copy.
          for (const r2 of sortedRs(idx, board.slot[m]!)) {
            if (r2 === r1) continue;
            const m2 = at.get(r2).members;
            if (roleOf(m2, ids[m]!) !== 'STANDBY' || !still(r2)) continue;
            const l = firstLight(m2, m, light, false);
            if (l < 0 || tot(l) > max - 2) continue;
            const p1 = parseMembers(m1);
            moveStandby(r1, p1.active!, p1.standbys, p1.oos, ids[h]!, ids[m]!, false);
            const p2 = parseMembers(m2);
            moveStandby(r2, p2.active!, p2.standbys, p2.oos, ids[m]!, ids[l]!, false);
            return true;
          }
        }
      }
    }
    return false;
  }

  /**
   * Phase T fallback: heavy copies hold only actives the light copies could take. Hand an active
   * to a standby that holds the state, then move the (now) standby entry to the light copy.
   */
  function handOff(heavy: readonly number[], light: readonly number[]): boolean {
    for (const h of heavy) {
      for (const r of sortedRs(idx, board.slot[h]!)) {
        const m = at.get(r).members;
        if (roleOf(m, ids[h]!) !== 'ACTIVE' || !still(r)) continue;
        const l = firstLight(m, h, light, false);
        if (l < 0) continue;
        const p = parseMembers(m);
        if (p.standbys.length === 0) {
          // No standby (under-replicated): the light copy takes over and restores the state.
          at.put(r, buildMembers(tx.pool, ids[l]!, [], p.oos), true);
          st.activeMoves++;
          return true;
        }
        const heir = p.standbys.find((x) => promotable(r, board.posOf.get(x)!));
        if (heir === undefined) continue;
        // The old active stays a standby (it holds the state) until the light copy caught up.
        moveStandby(r, heir, p.standbys.map((x) => (x === heir ? ids[h]! : x)), p.oos, ids[h]!, ids[l]!, true);
        st.swaps++;
        return true;
      }
    }
    return false;
  }

  /**
   * A heaviest copy hands one of its actives to a promotable standby on a copy with ≤ max-2
   * actives: the first such RS in ascending order, its lightest qualifying standby.
   */
  function heavySwap(heavy: readonly number[], max: number): boolean {
    for (const h of heavy) {
      const list = sortedRs(idx, board.slot[h]!);
      const len = list.length;
      const s0 = lowerBound(list, spin(h, st.swaps));
      for (let q = 0; q < len; q++) {
        const r = list[(s0 + q) % len]!;
        const m = at.get(r).members;
        if (m.length < 2 || m[0]!.role !== 'ACTIVE' || m[0]!.copyId !== ids[h]) continue;
        let best = -1;
        for (let i = 1; i < m.length && m[i]!.role === 'STANDBY'; i++) {
          const p = board.posOf.get(m[i]!.copyId);
          if (p === undefined || board.act(p) > max - 2 || !promotable(r, p)) continue;
          if (best < 0 || board.act(p) < board.act(best)) best = p;
        }
        if (best >= 0) {
          swap(r, best);
          return true;
        }
      }
    }
    return false;
  }

  /**
   * Light copy l takes over actives (RS in ascending order) from copies with at least 2 more,
   * while it is below `max - 1`. Returns the number of swaps.
   */
  function fill(l: number, max: number): number {
    let done = 0;
    const list = sortedRs(idx, board.slot[l]!);
    const len = list.length;
    const s0 = lowerBound(list, spin(l, st.swaps));
    for (let q = 0; q < len; q++) {
      const r = list[(s0 + q) % len]!;
      if (board.act(l) > max - 2) break;
      const m = at.get(r).members;
      if (m.length < 2 || m[0]!.role !== 'ACTIVE') continue;
      const pa = board.posOf.get(m[0]!.copyId);
      if (pa === undefined || board.act(pa) - board.act(l) < 2) continue;
      if (roleOf(m, ids[l]!) !== 'STANDBY' || !promotable(r, l)) continue;
      swap(r, l);
      done++;
    }
    return done;
  }

  /** A light copy takes over an active from a copy with ≥ 2 more actives (first RS in order). */
  function directSwap(light: readonly number[]): boolean {
    for (const l of light) {
      for (const r of sortedRs(idx, board.slot[l]!)) {
        const m = at.get(r).members;
        if (m.length < 2 || m[0]!.role !== 'ACTIVE') continue;
        if (roleOf(m, ids[l]!) !== 'STANDBY' || !promotable(r, l)) continue;
        const pa = board.posOf.get(m[0]!.copyId);
        if (pa === undefined || board.act(pa) - board.act(l) < 2) continue;
        swap(r, l);
        return true;
      }
    }
    return false;
  }

  /**
   * Two swaps through a middle copy M: a heaviest copy hands an active to M (its standby there)
   * and M hands one of its actives to a lightest copy. Searched from both ends (cheap); a full
   * breadth-first search (`chainSwap`) is the last resort.
   */
  function twoStepSwap(heavy: readonly number[], lightest: readonly number[]): boolean {
    // Middle copies that can hand an active to a lightest copy: M → (rs, light).
    const via = new Map<number, { r: number; l: number }>();
    for (const l of lightest) {
      for (const r of sortedRs(idx, board.slot[l]!)) {
        const m = at.get(r).members;
        if (m.length < 2 || m[0]!.role !== 'ACTIVE' || roleOf(m, ids[l]!) !== 'STANDBY' || !promotable(r, l)) continue;
        const mid = board.posOf.get(m[0]!.copyId);
        if (mid === undefined || via.has(mid) || board.act(mid) - board.act(l) < 1) continue;
        via.set(mid, { r, l });
      }
    }
    if (via.size === 0) return false;
    for (const h of heavy) {
      for (const r of sortedRs(idx, board.slot[h]!)) {
        const m = at.get(r).members;
        if (m.length < 2 || m[0]!.role !== 'ACTIVE' || m[0]!.copyId !== ids[h]) continue;
        for (let i = 1; i < m.length && m[i]!.role === 'STANDBY'; i++) {
          const mid = board.posOf.get(m[i]!.copyId);
          if (mid === undefined || !promotable(r, mid)) continue;
          const v = via.get(mid);
          if (v === undefined || v.r === r || board.act(h) - board.act(mid) < 1) continue;
          swap(v.r, v.l);
          swap(r, mid);
          return true;
        }
      }
    }
    return false;
  }

  /** True when the copy at l is a promotable STANDBY somewhere (it could take an active). */
  function receptive(l: number): boolean {
    for (const r of sortedRs(idx, board.slot[l]!)) {
      const m = at.get(r).members;
      if (m.length > 1 && m[0]!.role === 'ACTIVE' && roleOf(m, ids[l]!) === 'STANDBY' && promotable(r, l)) return true;
    }
    return false;
  }

  /**
   * Breadth-first search for a chain of promotable swaps from a heaviest copy to a light one.
   * Bounded (copies expanded) so that a hopeless search stays cheap.
   */
  function chainSwap(heavy: readonly number[], max: number): boolean {
    const parent = new Int32Array(n).fill(-2);
    const parentR = new Int32Array(n);
    const queue: number[] = [];
    for (const h of heavy) {
      parent[h] = -1;
      queue.push(h);
    }
    const limit = Math.min(queue.length + 256, n);
    for (let qi = 0; qi < queue.length && qi < limit; qi++) {
      const x = queue[qi]!;
      for (const r of sortedRs(idx, board.slot[x]!)) {
        const m = at.get(r).members;
        if (m.length === 0 || m[0]!.role !== 'ACTIVE' || m[0]!.copyId !== ids[x]) continue;
        for (const mm of m) {
          if (mm.role !== 'STANDBY') continue;
          const y = board.posOf.get(mm.copyId);
          if (y === undefined || parent[y] !== -2 || !promotable(r, y)) continue;
          parent[y] = x;
          parentR[y] = r;
          if (board.act(y) <= max - 2) {
            for (let z = y; parent[z]! >= 0; z = parent[z]!) swap(parentR[z]!, z);
            return true;
          }
          queue.push(y);
        }
      }
    }
    return false;
  }

  /**
   * Moves a standby of one of h's active RS to a light copy that is not a member yet, so that the
   * next balancing can swap there (totals: the standby's copy must not be lighter than the target).
   */
  function prepareSwap(h: number, light: readonly number[]): boolean {
    for (const r of sortedRs(idx, board.slot[h]!)) {
      const m = at.get(r).members;
      if (m.length < 2 || m[0]!.copyId !== ids[h] || m[0]!.role !== 'ACTIVE' || at.failedOver(r) || !still(r)) continue;
      const others = live(m, h);
      const p = parseMembers(m);
      for (const l of light) {
        if (others.includes(l)) continue;
        let s = -1;
        for (const sb of p.standbys) {
          const ps = board.posOf.get(sb);
          if (ps === undefined || tot(ps) < tot(l) + 1) continue;
          // Host spread must not get worse (see `firstLight`).
          const rest = others.filter((o) => o !== ps).concat(h);
          if (spreadFeasible && hostClash(rest, l) && !hostClash(rest, ps)) continue;
          if (s < 0 || tot(ps) > tot(s)) s = ps;
        }
        if (s < 0) continue;
        moveStandby(r, p.active!, p.standbys, p.oos, ids[s]!, ids[l]!, false);
        return true;
      }
    }
    return false;
  }

  if (st.standbyMoves + st.activeMoves + st.swaps > 0 || at.balancePending) {
    tx.notes.push(
      `balanced ${at.name}: moved_standby=${st.standbyMoves} moved_active=${st.activeMoves} swapped_active=${st.swaps}` +
        (deferred
          ? ' (active swaps deferred to the next tick: failover first)'
          : at.balancePending
            ? ' (more swaps wait for new standbys: resumed on the next tick)'
            : ''),
    );
  }
}

/**
 * Finishes the pending standby move of RS r (its new standby is caught up): the leaving standby
 * leaves the RS.
 */
export function completeStandbyMove(tx: Tx, at: AppTx, r: number): void {
  const mv = at.standbyMoveOf(r)!;
  at.setStandbyMove(r, undefined);
  const members = at.get(r).members;
  if (!standbyMoveHolds(mv, members)) return;
  const p = parseMembers(members);
  // The factor may have been raised meanwhile: then the old standby stays.
  if (p.standbys.length <= at.spec.standbys) return;
  at.put(r, buildMembers(tx.pool, p.active, p.standbys.filter((x) => x !== mv.fromCopyId), p.oos), false);
  tx.notes.push(`standby move ${at.name}/${r}: ${mv.fromCopyId} -> ${mv.toCopyId} done (new standby caught up)`);
}

/**
 * Undoes the pending standby move of RS r: the new standby (still catching up) leaves again, the
 * old one stays. True when the new standby left (false: the move no longer held, or the RS needs
 * both to keep its factor).
 */
export function abandonStandbyMove(tx: Tx, at: AppTx, r: number, why: string): boolean {
  const mv = at.standbyMoveOf(r)!;
  at.setStandbyMove(r, undefined);
  const members = at.get(r).members;
  if (!standbyMoveHolds(mv, members)) return false;
  const p = parseMembers(members);
  tx.notes.push(`standby move ${at.name}/${r}: ${mv.fromCopyId} -> ${mv.toCopyId} abandoned: ${why}`);
  // The factor may have been raised meanwhile: then the new standby stays too.
  if (p.standbys.length <= at.spec.standbys) return false;
  at.put(r, buildMembers(tx.pool, p.active, p.standbys.filter((x) => x !== mv.toCopyId), p.oos), false);
  return true;
}
