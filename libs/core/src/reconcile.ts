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
 * 4. balance — only for the apps the event asked for (membership changes): see `balance`.
 */
import type { CopyInfo, Member } from './model';
import type { Tx, AppTx } from './tx';
import { ensureSlot } from './derived';
import { buildMembers, cmpStr, parseMembers, roleOf } from './members';
import { Board, placeInitial } from './placement';

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
      if (at !== undefined) demote(tx, at, true);
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
  demote(tx, at, false);
  const idx = at.idx();
  for (const c of ups) ensureSlot(idx, c.copyId);
  const board = new Board(ups, idx, (id) => idx.slotOf.get(id)!);
  if (at.spec.mode === 'FAULT_TOLERANT') repairFaultTolerant(tx, at, board);
  else {
    const k = at.spec.mode === 'DISTRIBUTED' ? 0 : at.spec.standbys;
    const todo = [...idx.deficient].sort((a, b) => a - b);
    for (const r of todo) repairRs(tx, at, board, r, k);
    if (tx.balance === 'all' || tx.balance.has(at.name)) balance(tx, at, board, k);
  }
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
 */
function demote(tx: Tx, at: AppTx, fencedOnly: boolean): void {
  if (!at.activated) return;
  const idx = at.idx();
  const bad = new Map<string, 'remove' | 'demote'>();
  for (let slot = 0; slot < idx.ids.length; slot++) {
    if (idx.rsOf[slot]!.size === 0) continue;
    const id = idx.ids[slot]!;
    const live = idx.act[slot]! + idx.sb[slot]! > 0;
    if (fencedOnly) {
      if (live && tx.fenced.has(id)) bad.set(id, 'demote');
      continue;
    }
    const c = tx.copy(id);
    if (c === undefined || c.app !== at.name || c.status === 'DRAINED') bad.set(id, 'remove');
    else if (live && (c.status !== 'UP' || tx.fenced.has(id))) bad.set(id, 'demote');
  }
  if (bad.size === 0) return;
  const affected = new Set<number>();
  for (const id of bad.keys()) for (const r of idx.rsOf[idx.slotOf.get(id)!]!) affected.add(r);
  // FAULT_TOLERANT RS share one member array: compute each distinct input once.
  const memo = new Map<readonly Member[], Member[]>();
  for (const r of [...affected].sort((a, b) => a - b)) {
    const cur = at.get(r).members;
    let fencedHere = false;
    for (const m of cur) if (m.role !== 'OUT_OF_SERVICE' && tx.fenced.has(m.copyId)) fencedHere = true;
    let next = memo.get(cur);
    if (next === undefined) {
      const p = parseMembers(cur);
      const demoted: string[] = [];
      let active = p.active;
      // List order = demotion order: the old active goes to the end first, then its standbys.
      if (active !== null && bad.has(active)) {
        if (bad.get(active) === 'demote') demoted.push(active);
        active = null;
      }
      const sbs: string[] = [];
      for (const s of p.standbys) {
        if (!bad.has(s)) sbs.push(s);
        else if (bad.get(s) === 'demote') demoted.push(s);
      }
      const oos = p.oos.filter((id) => bad.get(id) !== 'remove').concat(demoted);
      next = buildMembers(tx.pool, active, sbs, oos);
      memo.set(cur, next);
    }
    at.put(r, next, false);
    // A replaced process must hear about every RS it is (re-)listed in even when the final list
    // looks unchanged (e.g. demoted, then re-added as STANDBY): it is a new process without state.
    if (fencedHere) at.touched.add(r);
  }
}

/** Step 3 for one DISTRIBUTED / DISTRIBUTED_FAULT_TOLERANT RS. */
function repairRs(tx: Tx, at: AppTx, board: Board, r: number, k: number): void {
  const p = parseMembers(at.get(r).members);
  let active = p.active;
  const sbs = [...p.standbys];
  let activate = false;
  if (active === null) {
    if (sbs.length > 0) active = sbs.shift()!; // R-DFM-4: first healthy backup becomes primary.
    else if (board.n > 0) active = board.ids[board.pickActive([])]!;
    activate = active !== null;
  }
  if (sbs.length > k) sbs.length = k; // spec lowered: drop the last in promotion order.
  if (active !== null && sbs.length < k) {
    const live = [board.posOf.get(active)!, ...sbs.map((s) => board.posOf.get(s)!)];
    while (sbs.length < k && live.length < board.n) {
      const pos = board.pickStandby(live);
      if (pos < 0) break;
      live.push(pos);
      sbs.push(board.ids[pos]!);
    }
  }
  if (!activate && sbs.length === p.standbys.length && sbs.every((s, i) => s === p.standbys[i])) return;
  at.put(r, buildMembers(tx.pool, active, sbs, p.oos), activate);
}

/** Step 3 for a FAULT_TOLERANT app: one list for all RS, computed once. */
function repairFaultTolerant(tx: Tx, at: AppTx, board: Board): void {
  const k = at.spec.standbys;
  const p = parseMembers(at.get(0).members);
  let active = p.active;
  const sbs = [...p.standbys];
  let activate = false;
  if (active === null) {
    if (sbs.length > 0) active = sbs.shift()!;
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
 * the lightest copies (cheap: no epoch change); DISTRIBUTED apps move actives instead (epoch+1).
 * Phase A then brings active counts within 1 by swapping an active with one of its standbys on a
 * lighter copy (a switchover: epoch+1, totals unchanged), through a chain of swaps when no
 * direct one exists, and as a last resort by first moving a standby onto the light copy.
 * Every move strictly lowers the sum of squared counts, so both phases terminate; the guards
 * only protect against bugs. Moves are chosen deterministically (lowest positions and RS ids).
 */
function balance(tx: Tx, at: AppTx, board: Board, k: number): void {
  const n = board.n;
  if (n < 2) return;
  const idx = at.idx();
  const st = { standbyMoves: 0, activeMoves: 0, swaps: 0 };
  const ids = board.ids;
  const live = (members: readonly Member[], skip: number): number[] => {
    const out: number[] = [];
    for (const m of members) {
      if (m.role === 'OUT_OF_SERVICE') continue;
      const p = board.posOf.get(m.copyId);
      if (p !== undefined && p !== skip) out.push(p);
    }
    return out;
  };
  /** First light copy (in `light` order) that could join `members` (strict: on a new host). */
  const firstLight = (members: readonly Member[], h: number, light: readonly number[], strict: boolean): number => {
    const others = live(members, h);
    for (const l of light) {
      if (l === h || others.includes(l)) continue;
      if (strict && others.some((o) => board.host[o] === board.host[l])) continue;
      return l;
    }
    return -1;
  };
  const swap = (r: number, to: number): void => {
    // `to` (a STANDBY) becomes ACTIVE; the old active takes its place in the promotion order.
    const p = parseMembers(at.get(r).members);
    const sbs = p.standbys.map((s) => (s === ids[to] ? p.active! : s));
    at.put(r, buildMembers(tx.pool, ids[to]!, sbs, p.oos), true);
    st.swaps++;
  };

  let guard = at.rsCount * (1 + k) + n + 16;
  // Phase T: totals.
  while (guard-- > 0) {
    let max = -1;
    let min = 0x7fffffff;
    for (let i = 0; i < n; i++) {
      const t = board.tot(i);
      if (t > max) max = t;
      if (t < min) min = t;
    }
    if (max - min <= 1) break;
    const heavy: number[] = [];
    const light: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = board.tot(i);
      if (t === max) heavy.push(i);
      else if (t <= max - 2) light.push(i);
    }
    light.sort((a, b) => board.tot(a) - board.tot(b) || a - b);
    let done = false;
    const wanted = k === 0 ? 'ACTIVE' : 'STANDBY';
    for (const strict of [true, false]) {
      for (const h of heavy) {
        let bestR = -1;
        let bestL = -1;
        for (const r of idx.rsOf[board.slot[h]!]!) {
          if (bestR !== -1 && r >= bestR) continue;
          const m = at.get(r).members;
          if (roleOf(m, ids[h]!) !== wanted) continue;
          const l = firstLight(m, h, light, strict);
          if (l >= 0) {
            bestR = r;
            bestL = l;
          }
        }
        if (bestR < 0) continue;
        const p = parseMembers(at.get(bestR).members);
        if (k === 0) {
          at.put(bestR, buildMembers(tx.pool, ids[bestL]!, [], p.oos), true);
          st.activeMoves++;
        } else {
          const sbs = p.standbys.filter((s) => s !== ids[h]).concat(ids[bestL]!);
          at.put(bestR, buildMembers(tx.pool, p.active, sbs, p.oos), false);
          st.standbyMoves++;
        }
        done = true;
        break;
      }
      if (done) break;
    }
    if (!done && k > 0) {
      // Heavy copies hold only actives the light copies could take: hand the active to its first
      // standby, then move the (now) standby entry to the light copy.
      for (const h of heavy) {
        let bestR = -1;
        let bestL = -1;
        for (const r of idx.rsOf[board.slot[h]!]!) {
          if (bestR !== -1 && r >= bestR) continue;
          const m = at.get(r).members;
          if (roleOf(m, ids[h]!) !== 'ACTIVE') continue;
          const l = firstLight(m, h, light, false);
          if (l >= 0) {
            bestR = r;
            bestL = l;
          }
        }
        if (bestR < 0) continue;
        const p = parseMembers(at.get(bestR).members);
        if (p.standbys.length > 0) {
          at.put(bestR, buildMembers(tx.pool, p.standbys[0]!, [...p.standbys.slice(1), ids[bestL]!], p.oos), true);
          st.swaps++;
          st.standbyMoves++;
        } else {
          at.put(bestR, buildMembers(tx.pool, ids[bestL]!, [], p.oos), true);
          st.activeMoves++;
        }
        done = true;
        break;
      }
    }
    if (!done) break;
  }

  guard = at.rsCount * (1 + k) + n + 16;
  // Phase A: actives (DISTRIBUTED: equal to totals, already done).
  while (k > 0 && guard-- > 0) {
    let max = -1;
    let min = 0x7fffffff;
    for (let i = 0; i < n; i++) {
      const a = board.act(i);
      if (a > max) max = a;
      if (a < min) min = a;
    }
    if (max - min <= 1) break;
    const light: number[] = [];
    const heavy: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = board.act(i);
      if (a <= max - 2) light.push(i);
      if (a === max) heavy.push(i);
    }
    light.sort((a, b) => board.act(a) - board.act(b) || a - b);
    if (directSwap(light)) continue;
    if (chainSwap(heavy, max)) continue;
    if (moveThenSwap(heavy, light)) continue;
    break;
  }

  function directSwap(light: readonly number[]): boolean {
    for (const l of light) {
      let bestR = -1;
      let bestAct = -1;
      for (const r of idx.rsOf[board.slot[l]!]!) {
        const m = at.get(r).members;
        if (m.length === 0 || m[0]!.role !== 'ACTIVE') continue;
        if (roleOf(m, ids[l]!) !== 'STANDBY') continue;
        const pa = board.posOf.get(m[0]!.copyId);
        if (pa === undefined) continue;
        const a = board.act(pa);
        if (a - board.act(l) < 2) continue;
        if (a > bestAct || (a === bestAct && r < bestR)) {
          bestAct = a;
          bestR = r;
        }
      }
      if (bestR >= 0) {
        swap(bestR, l);
        return true;
      }
    }
    return false;
  }

  function chainSwap(heavy: readonly number[], max: number): boolean {
    const parent = new Int32Array(n).fill(-2);
    const parentR = new Int32Array(n);
    const queue: number[] = [];
    for (const h of heavy) {
      parent[h] = -1;
      queue.push(h);
    }
    for (let qi = 0; qi < queue.length; qi++) {
      const x = queue[qi]!;
      const list = [...idx.rsOf[board.slot[x]!]!].sort((a, b) => a - b);
      for (const r of list) {
        const m = at.get(r).members;
        if (m.length === 0 || m[0]!.role !== 'ACTIVE' || m[0]!.copyId !== ids[x]) continue;
        for (const mm of m) {
          if (mm.role !== 'STANDBY') continue;
          const y = board.posOf.get(mm.copyId);
          if (y === undefined || parent[y] !== -2) continue;
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

  function moveThenSwap(heavy: readonly number[], light: readonly number[]): boolean {
    for (const h of heavy) {
      const list = [...idx.rsOf[board.slot[h]!]!].sort((a, b) => a - b);
      for (const r of list) {
        const m = at.get(r).members;
        if (m.length === 0 || m[0]!.copyId !== ids[h] || m[0]!.role !== 'ACTIVE') continue;
        const others = live(m, h);
        const p = parseMembers(m);
        for (const l of light) {
          if (others.includes(l)) continue;
          if (p.standbys.length === 0) {
            if (board.tot(h) < board.tot(l) + 1) continue;
            at.put(r, buildMembers(tx.pool, ids[l]!, [], p.oos), true);
            st.activeMoves++;
            return true;
          }
          let s = -1;
          for (const sb of p.standbys) {
            const ps = board.posOf.get(sb);
            if (ps === undefined || board.tot(ps) < board.tot(l) + 1) continue;
            if (s < 0 || board.tot(ps) > board.tot(s)) s = ps;
          }
          if (s < 0) continue;
          // The light copy takes the standby's slot, then becomes ACTIVE; h takes its place.
          const sbs = p.standbys.map((x) => (x === ids[s] ? ids[h]! : x));
          at.put(r, buildMembers(tx.pool, ids[l]!, sbs, p.oos), true);
          st.standbyMoves++;
          st.swaps++;
          return true;
        }
      }
    }
    return false;
  }

  if (st.standbyMoves + st.activeMoves + st.swaps > 0) {
    tx.notes.push(`balanced ${at.name}: moved_standby=${st.standbyMoves} moved_active=${st.activeMoves} swapped_active=${st.swaps}`);
  }
}
