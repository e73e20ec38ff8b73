/**
 * Placement: where ACTIVE and STANDBY roles go. Pure functions over copy lists and load counters.
 *
 * The initial distribution (R-SC "initial load distribution") is constructive rather than
 * greedy so that 100,000 RS over 1,000 copies place in a few tens of milliseconds:
 *
 * - Copies are put in a *host-spread order* (copies of a host evenly interleaved with the
 *   others), so neighbouring positions are on different hosts whenever the host sizes allow it.
 * - RS are dealt in blocks of N (N = copies): in block b, RS `b·N + i` is ACTIVE on slot i
 *   and its j-th standby on slot `i + off_b[j]` (mod N). Every block gives each copy exactly
 *   one active and `s-1` standbys, so full blocks are perfectly balanced.
 * - The first-standby offset cycles through every offset that keeps members on distinct hosts,
 *   and every block re-deals the copies of each host over that host's slots with a fixed
 *   pseudo-random permutation (an integer hash of block and host: deterministic, no RNG).
 *   The actives of one copy therefore have their first standbys on many *unrelated* copies
 *   (declustering): when a copy fails, its load spreads over many survivors, and the survivors
 *   of different failures barely overlap, so active counts stay within 1 or need few swaps.
 * - The last partial block is placed greedily (least-loaded first), which keeps both active and
 *   total counts within 1 of each other.
 */
import type { AppSpec, CopyInfo, Member } from './model';
import type { Counts } from './derived';
import { cmpStr, MemberPool } from './members';

/**
 * Copies ordered so that each host's copies are evenly interleaved with the other hosts'
 * (largest-remainder style: a host with n copies has its i-th copy at fraction (i+½)/n).
 * Hosts of equal size come out round-robin. Deterministic: depends only on host names and ids.
 */
export function spreadOrder(copies: readonly CopyInfo[]): CopyInfo[] {
  const byHost = new Map<string, CopyInfo[]>();
  for (const c of copies) {
    let l = byHost.get(c.host);
    if (l === undefined) byHost.set(c.host, (l = []));
    l.push(c);
  }
  const keyed: { c: CopyInfo; num: number; den: number }[] = [];
  for (const list of byHost.values()) {
    list.sort((a, b) => cmpStr(a.copyId, b.copyId));
    list.forEach((c, i) => keyed.push({ c, num: 2 * i + 1, den: 2 * list.length }));
  }
  keyed.sort((a, b) => {
    // Compare fractions exactly (cross-multiplication), then host, then copy id.
    const d = a.num * b.den - b.num * a.den;
    if (d !== 0) return d;
    return cmpStr(a.c.host, b.c.host) || cmpStr(a.c.copyId, b.c.copyId);
  });
  return keyed.map((k) => k.c);
}

/**
 * Whether balancing enforces host spread for an app with `k` standbys per RS whose eligible
 * copies sit on hosts of the given sizes: some host has several copies (otherwise every RS is
 * spread anyway), there are at least 1 + k hosts, and no host holds more than copies/(1 + k) of
 * them. Then every RS can have its members on distinct hosts with balanced counts (a host's
 * copies share at most one entry per RS), and balancing never makes an RS's spread worse;
 * otherwise counts come first and hosts are only preferred. Shared by `reconcile` and the
 * invariant checks, so both judge by one rule.
 */
export function spreadBinds(hostSizes: Iterable<number>, k: number): boolean {
  let hosts = 0;
  let max = 0;
  let n = 0;
  for (const size of hostSizes) {
    if (size <= 0) continue;
    hosts++;
    n += size;
    if (size > max) max = size;
  }
  return k > 0 && max >= 2 && hosts >= 1 + k && max * (1 + k) <= n;
}

/**
 * A set of eligible copies in a fixed order, reading load counters through slots. Picks are
 * "least loaded first, prefer a host not yet used by the RS, then the earliest position", which
 * keeps counts balanced and members spread over hosts without making hosts a hard constraint.
 */
export class Board {
  /** Number of eligible copies. */
  readonly n: number;
  /** Position → copy id. */
  readonly ids: readonly string[];
  /** Copy id → position. */
  readonly posOf: ReadonlyMap<string, number>;
  /** Position → host number. */
  readonly host: Int32Array;
  /** Position → counters slot. */
  readonly slot: Int32Array;
  private readonly mark: Int32Array;
  private readonly hostMark: Int32Array;
  private stamp = 0;
  /** Lower bound of every copy's total, or -1 when unknown (see `pickStandby`). */
  private minTot = -1;
  /** Every copy before this position has a total above `minTot` (see `pickStandby`). */
  private floorFrom = 0;

  /**
   * @param copies eligible copies in board order (ties in picks go to the earliest).
   * @param counts load counters (an app index, or local arrays during initial placement).
   * @param slotOf counters slot of a copy.
   */
  constructor(
    copies: readonly CopyInfo[],
    readonly counts: Counts,
    slotOf: (copyId: string) => number,
  ) {
    // Plain loops: this runs once per decision, mostly before the JIT has optimised it.
    const n = copies.length;
    this.n = n;
    const ids: string[] = new Array(n);
    const posOf = new Map<string, number>();
    const hostNo = new Map<string, number>();
    const host = new Int32Array(n);
    const slot = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const c = copies[i]!;
      ids[i] = c.copyId;
      posOf.set(c.copyId, i);
      let h = hostNo.get(c.host);
      if (h === undefined) hostNo.set(c.host, (h = hostNo.size));
      host[i] = h;
      slot[i] = slotOf(c.copyId);
    }
    this.ids = ids;
    this.host = host;
    this.slot = slot;
    this.posOf = posOf;
    this.mark = new Int32Array(this.n);
    this.hostMark = new Int32Array(Math.max(1, hostNo.size));
  }

  /** ACTIVE count of position p. */
  act(p: number): number {
    return this.counts.act[this.slot[p]!]!;
  }
  /** ACTIVE+STANDBY count of position p. */
  tot(p: number): number {
    const s = this.slot[p]!;
    return this.counts.act[s]! + this.counts.sb[s]!;
  }

  private prepare(live: readonly number[], count: number): number {
    const st = ++this.stamp;
    for (let i = 0; i < count; i++) {
      const p = live[i]!;
      if (p < 0) continue;
      this.mark[p] = st;
      this.hostMark[this.host[p]!] = st;
    }
    return st;
  }

  /** True when position p is on a host already used by `live` (call right after a pick). */
  hostUsed(p: number): boolean {
    return this.hostMark[this.host[p]!] === this.stamp;
  }

  /** Must be called when some copy's total may have decreased since the last pick. */
  totalsDecreased(): void {
    this.minTot = -1;
  }

  /**
   * Best new standby for an RS whose live members are at positions `live` (its first `count`
   * entries: callers reuse one scratch array, as `length = 0` would drop its storage): lowest total, then a
   * host the RS does not use yet, then earliest position. -1 when every copy is already a member.
   *
   * The scan stops at the first copy with the global minimum total on a new host: nothing can
   * beat it. The minimum is cached (totals only grow while repairs add standbys), which makes a
   * pick O(1) on a balanced cluster instead of O(copies); so is the prefix of copies already
   * above it, so that thousands of picks after a failure do not rescan it each time.
   */
  pickStandby(live: readonly number[], count = live.length): number {
    const st = this.prepare(live, count);
    const { act, sb } = this.counts;
    const slot = this.slot;
    const n = this.n;
    if (this.minTot < 0) {
      let m = 0x7fffffff;
      for (let i = 0; i < n; i++) m = Math.min(m, act[slot[i]!]! + sb[slot[i]!]!);
      this.minTot = m;
      this.floorFrom = 0;
    }
    const floor = this.minTot;
    // Fast path: the first copy at the floor on a new host is the answer, and no copy before
    // `floorFrom` is at the floor (totals only grow between refreshes), so start there.
    for (let i = this.floorFrom; i < n; i++) {
      const s = slot[i]!;
      if (act[s]! + sb[s]! > floor) {
        if (i === this.floorFrom) this.floorFrom++;
        continue;
      }
      if (this.mark[i] !== st && this.hostMark[this.host[i]!] !== st) return i;
    }
    let best = -1;
    let bt = 0x7fffffff;
    let bh = 2;
    let gmin = 0x7fffffff;
    for (let i = 0; i < n; i++) {
      const s = slot[i]!;
      const t = act[s]! + sb[s]!;
      if (t < gmin) gmin = t;
      if (this.mark[i] === st || t > bt) continue;
      const h = this.hostMark[this.host[i]!] === st ? 1 : 0;
      if (t < bt || h < bh) {
        best = i;
        bt = t;
        bh = h;
      }
    }
    // A full scan saw every copy: refresh the floor (the old level may be used up).
    if (gmin !== floor) {
      this.minTot = gmin;
      this.floorFrom = 0;
    }
    return best;
  }

  /**
   * Best copy to take a new ACTIVE (no standby could be promoted): fewest actives, then lowest
   * total, then a host the RS does not use, then earliest position. -1 when none is eligible.
   */
  pickActive(live: readonly number[]): number {
    const st = this.prepare(live, live.length);
    const { act, sb } = this.counts;
    const slot = this.slot;
    let best = -1;
    let ba = 0x7fffffff;
    let bt = 0x7fffffff;
    let bh = 2;
    for (let i = 0; i < this.n; i++) {
      if (this.mark[i] === st) continue;
      const s = slot[i]!;
      const a = act[s]!;
      if (a > ba) continue;
      const t = a + sb[s]!;
      const h = this.hostMark[this.host[i]!] === st ? 1 : 0;
      if (a < ba || t < bt || (t === bt && h < bh)) {
        best = i;
        ba = a;
        bt = t;
        bh = h;
      }
    }
    return best;
  }
}

/**
 * Offsets of the members of each full block: `off[0] = 0` (the active), `off[1]` cycles through
 * host-compatible offsets (declustering), later offsets are the next host-compatible ones.
 * `conf(d)` = how many positions share a host with the position d further on; it is shift
 * invariant, so the host clash of two members at offsets a and b is `conf(b - a)`.
 */
function blockOffsets(host: Int32Array, n: number, s: number, blocks: number): Int32Array[] {
  const confMemo = new Int32Array(n).fill(-1);
  const conf = (d: number): number => {
    d = ((d % n) + n) % n;
    let c = confMemo[d]!;
    if (c < 0) {
      c = 0;
      for (let i = 0; i < n; i++) if (host[i] === host[(i + d) % n]) c++;
      confMemo[d] = c;
    }
    return c;
  };
  const first: number[] = [];
  for (let d = 1; d < n && first.length < blocks; d++) if (conf(d) === 0) first.push(d);
  if (first.length === 0) {
    // No offset avoids a host clash (e.g. one host): use them all, fewest clashes first.
    for (let d = 1; d < n; d++) first.push(d);
    first.sort((a, b) => conf(a) - conf(b) || a - b);
    first.length = Math.min(first.length, Math.max(1, blocks));
  }
  const memo = new Map<number, Int32Array>();
  const out: Int32Array[] = [];
  for (let b = 0; b < blocks; b++) {
    const o1 = first[b % first.length]!;
    let offs = memo.get(o1);
    if (offs === undefined) {
      offs = new Int32Array(s);
      offs[1] = o1;
      for (let j = 2; j < s; j++) {
        let bestD = -1;
        let bestC = Infinity;
        for (let t = 0; t < n - 1; t++) {
          const d = 1 + ((offs[j - 1]! + t) % (n - 1));
          let used = false;
          for (let q = 1; q < j; q++) if (offs[q] === d) used = true;
          if (used) continue;
          let c = 0;
          for (let q = 0; q < j; q++) c += conf(d - offs[q]!);
          if (c < bestC) {
            bestC = c;
            bestD = d;
            if (c === 0) break;
          }
        }
        offs[j] = bestD;
      }
      memo.set(o1, offs);
    }
    out.push(offs);
  }
  return out;
}

/** 32-bit integer hash (lowbias32): deterministic mixing (block permutations, scan starts). */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Slot → position for block b: every host's positions are permuted among themselves, so the
 * host of each slot (and thus every host-clash computation) is the same in every block.
 */
function blockPermutation(byHost: readonly number[][], n: number, b: number, out: Int32Array): void {
  if (b === 0) {
    for (let i = 0; i < n; i++) out[i] = i;
    return;
  }
  for (let h = 0; h < byHost.length; h++) {
    const slots = byHost[h]!;
    const m = slots.length;
    const seed = mix32(Math.imul(b, 0x9e3779b1) ^ mix32(h + 1));
    for (let t = 0; t < m; t++) out[slots[t]!] = slots[t]!;
    for (let t = m - 1; t > 0; t--) {
      const j = mix32(seed + t) % (t + 1);
      const a = out[slots[t]!]!;
      out[slots[t]!] = out[slots[j]!]!;
      out[slots[j]!] = a;
    }
  }
}

const NO_MEMBERS: readonly Member[] = Object.freeze([]);

/**
 * Copies of a FAULT_TOLERANT app in template order: the first eligible copy by id is ACTIVE,
 * the next `k` (preferring hosts not used yet) are STANDBY.
 */
export function ftTemplate(copies: readonly CopyInfo[], k: number): { active: string | null; standbys: string[] } {
  const sorted = [...copies].sort((a, b) => cmpStr(a.copyId, b.copyId));
  if (sorted.length === 0) return { active: null, standbys: [] };
  const chosen = [sorted[0]!];
  const hosts = new Set([sorted[0]!.host]);
  for (const c of sorted) {
    if (chosen.length > k) break;
    if (!hosts.has(c.host)) {
      chosen.push(c);
      hosts.add(c.host);
    }
  }
  for (const c of sorted) {
    if (chosen.length > k) break;
    if (!chosen.includes(c)) chosen.push(c);
  }
  const standbys = chosen.slice(1).map((c) => c.copyId);
  return { active: chosen[0]!.copyId, standbys };
}

/**
 * Removes host clashes left by the block layout (uneven host sizes make a clash-free cyclic
 * layout impossible at some offsets): a clashing standby is exchanged with a standby of a nearby
 * RS when that makes both RS clash-free. Exchanging two standby entries leaves every copy's
 * active and total counts unchanged, so the balance of the layout is kept.
 */
function fixHostClashes(out: Member[][], count: number, s: number, host: Int32Array, sbPos: Map<Member, number>, actPos: Map<Member, number>): void {
  if (count === 0 || s < 2) return;
  const hostOf = (m: Member): number => host[(m.role === 'ACTIVE' ? actPos.get(m) : sbPos.get(m))!]!;
  const clashIn = (m: readonly Member[], j: number): boolean => {
    const h = hostOf(m[j]!);
    for (let i = 0; i < m.length; i++) if (i !== j && hostOf(m[i]!) === h) return true;
    return false;
  };
  const fits = (m: readonly Member[], skip: number, cand: Member): boolean => {
    const h = hostOf(cand);
    for (let i = 0; i < m.length; i++) {
      if (i === skip) continue;
      if (m[i]!.copyId === cand.copyId || hostOf(m[i]!) === h) return false;
    }
    return true;
  };
  const window = Math.min(count - 1, 256);
  for (let r = 0; r < count; r++) {
    const m = out[r]!;
    for (let j = 1; j < s; j++) {
      if (!clashIn(m, j)) continue;
      search: for (let d = 1; d <= window; d++) {
        const r2 = (r + d) % count;
        const m2 = out[r2]!;
        for (let j2 = 1; j2 < s; j2++) {
          const x = m[j]!;
          const y = m2[j2]!;
          if (!fits(m, j, y) || !fits(m2, j2, x)) continue;
          m[j] = y;
          m2[j2] = x;
          break search;
        }
      }
    }
  }
}

/**
 * The initial distribution of an application over its UP copies (others in `copies` are
 * ignored). Returns the member list of every RS (index = RS id).
 *
 * - DISTRIBUTED: RS r is ACTIVE on the (r mod N)-th copy of the host-spread order.
 * - DISTRIBUTED_FAULT_TOLERANT: one ACTIVE and `min(k, N-1)` STANDBYs per RS on distinct copies,
 *   active counts and total counts each within 1 across copies, members on distinct hosts when
 *   the host layout allows it, standbys of one copy's actives declustered (see module doc).
 * - FAULT_TOLERANT: every RS gets the same list (one shared array): see {@link ftTemplate}.
 *
 * With fewer copies than `1 + k` the RS are placed under-replicated; reconcile fills them later.
 */
export function placeInitial(spec: AppSpec, copies: readonly CopyInfo[], pool: MemberPool = new MemberPool()): Member[][] {
  const ups = copies.filter((c) => c.status === 'UP' && c.app === spec.name);
  const rsCount = spec.rsCount;
  const out: Member[][] = new Array(rsCount);
  if (ups.length === 0) {
    for (let r = 0; r < rsCount; r++) out[r] = NO_MEMBERS as Member[];
    return out;
  }
  if (spec.mode === 'FAULT_TOLERANT') {
    const t = ftTemplate(ups, spec.standbys);
    const members = [pool.get(t.active!, 'ACTIVE'), ...t.standbys.map((s) => pool.get(s, 'STANDBY'))];
    for (let r = 0; r < rsCount; r++) out[r] = members;
    return out;
  }
  const order = spreadOrder(ups);
  const n = order.length;
  const k = spec.mode === 'DISTRIBUTED' ? 0 : spec.standbys;
  const s = Math.min(1 + k, n);
  const ids = order.map((c) => c.copyId);
  if (s === 1) {
    for (let r = 0; r < rsCount; r++) out[r] = [pool.get(ids[r % n]!, 'ACTIVE')];
    return out;
  }
  const counts: Counts = { act: new Int32Array(n), sb: new Int32Array(n) };
  // Local counters: slot === position.
  const position = new Map(ids.map((id, i) => [id, i] as const));
  const board = new Board(order, counts, (id) => position.get(id)!);
  const blocks = Math.floor(rsCount / n);
  const offsets = blockOffsets(board.host, n, s, blocks);
  const actives = ids.map((id) => pool.get(id, 'ACTIVE'));
  const standbys = ids.map((id) => pool.get(id, 'STANDBY'));
  const byHost: number[][] = [];
  for (let p = 0; p < n; p++) (byHost[board.host[p]!] ??= []).push(p);
  const perm = new Int32Array(n);
  for (let b = 0; b < blocks; b++) {
    const off = offsets[b]!;
    blockPermutation(byHost, n, b, perm);
    for (let i = 0; i < n; i++) {
      // Built with push: packed arrays, like every other member list (monomorphic readers).
      const m: Member[] = [actives[perm[i]!]!];
      for (let j = 1; j < s; j++) m.push(standbys[perm[(i + off[j]!) % n]!]!);
      out[b * n + i] = m;
    }
  }
  fixHostClashes(out, blocks * n, s, board.host, new Map(standbys.map((m, p) => [m, p] as const)), new Map(actives.map((m, p) => [m, p] as const)));
  counts.act.fill(blocks);
  counts.sb.fill(blocks * (s - 1));
  const live: number[] = [];
  for (let r = blocks * n; r < rsCount; r++) {
    live.length = 0;
    const a = board.pickActive(live);
    live.push(a);
    counts.act[a]!++;
    const m: Member[] = [actives[a]!];
    for (let j = 1; j < s; j++) {
      const p = board.pickStandby(live);
      live.push(p);
      counts.sb[p]!++;
      m.push(standbys[p]!);
    }
    out[r] = m;
  }
  return out;
}
