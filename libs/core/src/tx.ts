/**
 * A transaction over `ClusterState`: one decision's copy-on-write working set. Handlers and
 * reconcile read and write through it; `commit` normalises, bumps versions exactly once and
 * derives the commands from the difference between the old and the new state. Deriving commands
 * from the diff (instead of emitting them step by step) is what keeps them minimal and always in
 * agreement with the persisted state.
 */
import type { AppSpec, AppState, ClusterState, CopyInfo, Edge, LeaderPhase, Member, PendingMove, Role, RsAssignment, StandbyMove } from './model';
import type { ControllerCommand, Decision, MemberView, RoleEntry, RouteChange } from './events';
import { applyChange, buildIndex, listedRs, peekIndex, setStandbyTarget, storeIndex, takeIndex, type AppIndex } from './derived';
import { cmpStr, MemberPool, own, roleOf, sameMembers } from './members';

const EMPTY: readonly Member[] = Object.freeze([]);
const NO_FENCED: ReadonlySet<string> = new Set();

/** `AppState.syncing` as a working copy. */
type Syncing = Record<string, Record<string, number>>;

/** Working copy of one application. */
export class AppTx {
  spec: AppSpec;
  activated: boolean;
  /** See `AppState.balancePending`. */
  balancePending: boolean;
  /** True once a STANDBY was written on a copy that did not hold that RS at the start. */
  addedStandbys = false;
  private rsArr: RsAssignment[];
  private cloned = false;
  /** Assignments before this decision: the base state's, or the empty ones of a new app. */
  private readonly before: readonly RsAssignment[];
  private index: AppIndex | null = null;
  /** RS ids written in this decision, in write order. */
  private readonly changedList: number[] = [];
  /**
   * Per RS: bit 1 = activated in this decision (epoch = base + 1), bit 2 = forced re-send,
   * bit 4 = its active failed over in this decision, bit 8 = written in this decision.
   * A flag array instead of a sparse "changed" map: a failure writes thousands of RS at
   * scattered ids, where a holey JS array turns into a dictionary and allocates per write.
   */
  private flags: Uint8Array | null = null;
  /** Working copy of `AppState.syncing` (null: still the base one). */
  private syncingW: Syncing | null = null;
  /** Working copy of `AppState.moves` (null: still the base one). */
  private movesW: Record<string, PendingMove> | null = null;
  /**
   * `rs:copyId` of the standbys reported caught up in this decision: a later write of the RS
   * (a move completing) must not restore their marks from the decision's start.
   */
  private syncedNow: Set<string> | null = null;
  /** Working copy of `AppState.standbyMoves` (null: still the base one). */
  private sbMovesW: Record<string, StandbyMove> | null = null;

  /**
   * @param fenced the decision's replaced processes (re-listed ones hold no state: catching up).
   */
  constructor(
    readonly name: string,
    readonly base: AppState | undefined,
    spec: AppSpec,
    private readonly fenced: ReadonlySet<string> = NO_FENCED,
  ) {
    this.spec = spec;
    this.activated = base?.activated ?? false;
    this.balancePending = base?.balancePending === true;
    if (base !== undefined) this.rsArr = base.rs as RsAssignment[];
    else {
      this.rsArr = new Array(spec.rsCount);
      for (let r = 0; r < spec.rsCount; r++) this.rsArr[r] = { app: name, rs: r, epoch: 0, version: 0, members: EMPTY };
      this.cloned = true;
    }
    this.before = base !== undefined ? base.rs : this.rsArr.slice();
  }

  /** Current assignment of RS r. */
  get(r: number): RsAssignment {
    return this.rsArr[r]!;
  }

  /** Current assignments (read-only view; valid until the next write). */
  get current(): readonly RsAssignment[] {
    return this.rsArr;
  }

  /** Number of RS. */
  get rsCount(): number {
    return this.rsArr.length;
  }

  /** Derived index for the working state (taken from the base state's cache on first use). */
  idx(): AppIndex {
    if (this.index === null) {
      this.index = this.base !== undefined && this.base.rs === this.rsArr ? takeIndex(this.base) : buildIndex(this.snapshot());
    }
    setStandbyTarget(this.index, this.rsArr, this.activated, this.spec.standbys);
    return this.index;
  }

  private snapshot(): AppState {
    return { spec: this.spec, activated: this.activated, rs: this.rsArr };
  }

  /**
   * Writes RS r. `activate` = a member becomes ACTIVE or the active copy changes: the epoch
   * becomes base epoch + 1 (once per decision: intermediate activations are never published).
   */
  put(r: number, members: readonly Member[], activate: boolean): void {
    const idx = this.idx();
    if (!this.cloned) this.clone();
    let flags = this.flags;
    if (flags === null) flags = this.flags = new Uint8Array(this.rsArr.length);
    const cur = this.rsArr[r]!;
    let f = flags[r]!;
    // Not written yet: the current assignment is the base one (and is already in the CPU cache;
    // the base array's slot may not be).
    const base = (f & 8) === 0 ? cur : this.before[r]!;
    if ((f & 8) === 0) {
      f |= 8;
      this.changedList.push(r);
    }
    if (activate) f |= 1;
    flags[r] = f;
    const epoch = (f & 1) !== 0 ? base.epoch + 1 : base.epoch;
    this.rsArr[r] = { app: this.name, rs: r, epoch, version: base.version + 1, members };
    applyChange(idx, r, cur.members, members, this.rsArr);
    this.trackSyncing(r, base, members);
  }

  /**
   * Recomputes which STANDBYs of RS r are catching up (see `AppState.syncing`), relative to the
   * decision's start so repeated writes of one RS agree: still listed and catching up at the
   * start, or new to the RS (or a replaced process) in an RS that has served before (epoch ≥ 1:
   * at epoch 0 nothing was ever acknowledged, so every member holds the whole state).
   */
  private trackSyncing(r: number, base: RsAssignment, members: readonly Member[]): void {
    const start = own(this.base?.syncing ?? NO_SYNCING, r);
    let next: Record<string, number> | null = null;
    for (let i = 0; i < members.length; i++) {
      const m = members[i]!;
      if (m.role !== 'STANDBY') continue;
      let since = start === undefined ? undefined : own(start, m.copyId);
      // Reported caught up in this decision (an earlier entry of the same report): stays so.
      if (since !== undefined && this.syncedNow !== null && this.syncedNow.has(`${r}:${m.copyId}`)) continue;
      if (since === undefined) {
        const was = roleOf(base.members, m.copyId);
        const fresh = (was !== 'STANDBY' && was !== 'ACTIVE') || this.fenced.has(m.copyId);
        if (!fresh) continue;
        if (was !== 'STANDBY' && was !== 'ACTIVE') this.addedStandbys = true;
        if (base.epoch === 0) continue;
        since = base.version + 1;
      }
      (next ??= {})[m.copyId] = since;
    }
    const cur = own((this.syncingW ?? this.base?.syncing ?? NO_SYNCING) as Syncing, r);
    if (next === null ? cur === undefined : cur !== undefined && sameSince(cur, next)) return;
    this.syncingW ??= cloneSyncing(this.base?.syncing);
    if (next === null) delete this.syncingW[r];
    else this.syncingW[r] = next;
  }

  /** True when `copyId` is a STANDBY of RS r that is still catching up. */
  isSyncing(r: number, copyId: string): boolean {
    const e = own((this.syncingW ?? this.base?.syncing ?? NO_SYNCING) as Syncing, r);
    return e !== undefined && own(e, copyId) !== undefined;
  }

  /** True when some STANDBY of this app is still catching up. */
  hasSyncing(): boolean {
    const all = (this.syncingW ?? this.base?.syncing ?? NO_SYNCING) as Syncing;
    for (const _ in all) return true;
    return false;
  }

  /** Per copy: the number of RS it is catching up in (copies caught up everywhere are absent). */
  syncingCounts(): Map<string, number> {
    const out = new Map<string, number>();
    const all = (this.syncingW ?? this.base?.syncing ?? NO_SYNCING) as Syncing;
    for (const r in all) for (const id in all[r]) out.set(id, (out.get(id) ?? 0) + 1);
    return out;
  }

  /** The pending move of RS r (see `AppState.moves`). */
  moveOf(r: number): PendingMove | undefined {
    return own((this.movesW ?? this.base?.moves ?? NO_MOVES) as Record<string, PendingMove>, r);
  }

  /** True when some RS of this app has a pending move. */
  hasMoves(): boolean {
    for (const _ in this.movesW ?? this.base?.moves ?? NO_MOVES) return true;
    return false;
  }

  /** Pending moves by RS id (read-only view). */
  moves(): Readonly<Record<string, PendingMove>> {
    return this.movesW ?? this.base?.moves ?? NO_MOVES;
  }

  /** Records (or, with undefined, forgets) the pending move of RS r. */
  setMove(r: number, m: PendingMove | undefined): void {
    if (m === undefined && this.moveOf(r) === undefined) return;
    this.movesW ??= { ...(this.base?.moves ?? NO_MOVES) };
    if (m === undefined) delete this.movesW[r];
    else this.movesW[r] = m;
  }

  /** The pending standby move of RS r (see `AppState.standbyMoves`). */
  standbyMoveOf(r: number): StandbyMove | undefined {
    return own((this.sbMovesW ?? this.base?.standbyMoves ?? NO_SB_MOVES) as Record<string, StandbyMove>, r);
  }

  /** Pending standby moves by RS id (read-only view). */
  standbyMoves(): Readonly<Record<string, StandbyMove>> {
    return this.sbMovesW ?? this.base?.standbyMoves ?? NO_SB_MOVES;
  }

  /** True when some RS of this app has a pending standby move. */
  hasStandbyMoves(): boolean {
    for (const _ in this.sbMovesW ?? this.base?.standbyMoves ?? NO_SB_MOVES) return true;
    return false;
  }

  /** Records (or, with undefined, forgets) the pending standby move of RS r. */
  setStandbyMove(r: number, m: StandbyMove | undefined): void {
    if (m === undefined && this.standbyMoveOf(r) === undefined) return;
    this.sbMovesW ??= { ...(this.base?.standbyMoves ?? NO_SB_MOVES) };
    if (m === undefined) delete this.sbMovesW[r];
    else this.sbMovesW[r] = m;
  }

  /**
   * The active of RS r reported `copyId` caught up, replicating to the member list of assignment
   * `version`. True when that cleared a catching-up mark (a report about an older listing, or
   * about a standby already caught up, changes nothing).
   */
  markSynced(r: number, copyId: string, version: number): boolean {
    const e = own((this.syncingW ?? this.base?.syncing ?? NO_SYNCING) as Syncing, r);
    const since = e === undefined ? undefined : own(e, copyId);
    if (since === undefined || version < since) return false;
    (this.syncedNow ??= new Set()).add(`${r}:${copyId}`);
    this.syncingW ??= cloneSyncing(this.base?.syncing);
    const next = { ...this.syncingW[r]! };
    delete next[copyId];
    if (Object.keys(next).length === 0) delete this.syncingW[r];
    else this.syncingW[r] = next;
    return true;
  }

  /**
   * The moves to store: those that still hold in the final assignments (see {@link moveHolds});
   * the base record itself when nothing changed, undefined when none is left.
   */
  private finishMoves(rs: readonly RsAssignment[]): AppState['moves'] {
    return keepHolding(this.movesW, this.base?.moves, moveHolds, rs);
  }

  /** Like {@link finishMoves} for standby moves (see {@link standbyMoveHolds}). */
  private finishStandbyMoves(rs: readonly RsAssignment[]): AppState['standbyMoves'] {
    return keepHolding(this.sbMovesW, this.base?.standbyMoves, standbyMoveHolds, rs);
  }

  /**
   * Makes the working RS array writable (copy on first write). Callers about to write many RS
   * call it before loading them: copying 100,000 slots evicts much of the CPU cache.
   */
  clone(): void {
    if (this.cloned) return;
    this.rsArr = this.rsArr.slice();
    this.cloned = true;
  }

  /** Marks RS r as failed over in this decision (its promotion is fixed by R-DFM-4). */
  markFailedOver(r: number): void {
    if (this.flags !== null) this.flags[r]! |= 4;
  }

  /** True when RS r failed over in this decision. */
  failedOver(r: number): boolean {
    return this.flags !== null && (this.flags[r]! & 4) !== 0;
  }

  /**
   * True when `copyId` held RS r (ACTIVE or STANDBY) when the decision started, i.e. it has the
   * RS state and may be promoted. Standbys added in this decision are still catching up.
   */
  hadState(r: number, copyId: string): boolean {
    const role = roleOf(this.before[r]!.members, copyId);
    return role === 'ACTIVE' || role === 'STANDBY';
  }

  /** Forces RS r to be re-sent with a new version even if members and epoch end up unchanged. */
  touch(r: number): void {
    this.put(r, this.rsArr[r]!.members, false);
    this.flags![r]! |= 2;
  }

  /**
   * Ends the transaction for this app: reverts RS whose net change is nil (so versions only move
   * on real changes), returns the new AppState (or the base one when nothing changed) and the
   * RS ids that really changed, in ascending order.
   */
  finish(): { app: AppState; changedRs: number[] } {
    const changedRs: number[] = [];
    const flags = this.flags;
    const list = this.changedList;
    if (list.length > 0) {
      // A typed-array sort: numeric without a comparator call per step.
      const sorted = Int32Array.from(list).sort();
      for (let i = 0; i < sorted.length; i++) {
        const r = sorted[i]!;
        const base = this.before[r]!;
        const cur = this.rsArr[r]!;
        if ((flags![r]! & 3) === 0 && sameMembers(base.members, cur.members)) this.rsArr[r] = base;
        else changedRs.push(r);
      }
    }
    const b = this.base;
    const rs = changedRs.length === 0 && b !== undefined ? b.rs : this.rsArr;
    let app: AppState;
    const pending = this.balancePending;
    const syncing = this.syncingW === null ? b?.syncing : finishSyncing(this.syncingW, rs.length);
    const moves = this.finishMoves(rs);
    const sbMoves = this.finishStandbyMoves(rs);
    if (
      b !== undefined &&
      rs === b.rs &&
      b.spec === this.spec &&
      b.activated === this.activated &&
      (b.balancePending === true) === pending &&
      syncing === b.syncing &&
      moves === b.moves &&
      sbMoves === b.standbyMoves
    )
      app = b;
    else {
      app = pending ? { spec: this.spec, activated: this.activated, rs, balancePending: true } : { spec: this.spec, activated: this.activated, rs };
      if (syncing !== undefined) app = { ...app, syncing };
      if (moves !== undefined) app = { ...app, moves };
      if (sbMoves !== undefined) app = { ...app, standbyMoves: sbMoves };
    }
    if (this.index !== null) storeIndex(app.rs, this.index);
    return { app, changedRs };
  }
}

const NO_SYNCING: Readonly<Record<string, Readonly<Record<string, number>>>> = Object.freeze({});
const NO_MOVES: Readonly<Record<string, PendingMove>> = Object.freeze({});
const NO_SB_MOVES: Readonly<Record<string, StandbyMove>> = Object.freeze({});

/**
 * True while a pending standby move still holds in `members`: the RS has an ACTIVE and both the
 * leaving and the new copy are STANDBYs. Anything else (the leaving standby was promoted or
 * failed, the new one failed or was dropped) ends the move; the RS is then an ordinary RS.
 */
export function standbyMoveHolds(m: StandbyMove, members: readonly Member[] | undefined): boolean {
  if (members === undefined || members.length === 0 || members[0]!.role !== 'ACTIVE') return false;
  return roleOf(members, m.fromCopyId) === 'STANDBY' && roleOf(members, m.toCopyId) === 'STANDBY';
}

/**
 * True while a pending move still holds in `members`: its source is the ACTIVE and its target a
 * STANDBY. Anything else (the source failed over, the target failed or was dropped, the RS was
 * shrunk away) abandons the move: the RS is then an ordinary RS again.
 */
export function moveHolds(m: PendingMove, members: readonly Member[] | undefined): boolean {
  if (members === undefined || members.length === 0) return false;
  const head = members[0]!;
  return head.role === 'ACTIVE' && head.copyId === m.fromCopyId && roleOf(members, m.toCopyId) === 'STANDBY';
}

function cloneSyncing(s: AppState['syncing']): Syncing {
  const out: Syncing = {};
  if (s !== undefined) for (const r in s) out[r] = s[r] as Record<string, number>;
  return out;
}

/**
 * The syncing record to store (a working copy exists only when a mark changed): RS ids beyond
 * `rsCount` dropped (a topology update shrank the app), undefined when empty. Costs O(marks):
 * marks live only until the actives report their standbys caught up, milliseconds normally.
 */
function finishSyncing(w: Syncing, rsCount: number): AppState['syncing'] {
  let out: Syncing | undefined;
  for (const r in w) if (Number(r) < rsCount) (out ??= {})[r] = w[r]!;
  return out;
}

function sameSince(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** A StopCopy command as the transaction collects it. */
type Stop = Extract<ControllerCommand, { type: 'StopCopy' }>;

/** The working set of one decision (see module doc). */
export class Tx {
  readonly notes: string[] = [];
  /** Copies whose ACTIVE/STANDBY entries must be demoted whatever their status (new incarnation). */
  readonly fenced = new Set<string>();
  /** Copies that get a full SetRoles instead of per-RS entries. */
  readonly fullFor = new Set<string>();
  readonly stops: Stop[] = [];
  /** End of the passive phase: send every copy its full role set and every route. */
  fullResync = false;
  /** Drain/remove counts for the shell. */
  moved: { active: number; standby: number } | undefined;
  /** Apps to balance during reconcile ('all' after the passive phase). */
  balance: Set<string> | 'all' = new Set();
  /**
   * Apps whose active swaps wait for the next Tick (a failure: failover latency first, see
   * `reconcile.ts`). Standby moves still run at once.
   */
  deferSwaps: Set<string> = new Set();
  /**
   * Apps whose balancing also re-spreads RS over hosts (`reconcile.ts`, Phase H): where the room
   * for spread may have grown (a copy joined or was enabled, a topology change, the end of the
   * passive phase). A failure only takes room away, and the scan costs ~10 ms at 100,000 RS.
   * Balancing resumed on a Tick re-spreads too.
   */
  respread: Set<string> | 'all' = new Set();

  private copiesW: Record<string, CopyInfo> | null = null;
  private readonly appTxs = new Map<string, AppTx>();
  private edgesW: readonly Edge[] | null = null;
  private leaderW: LeaderPhase | null = null;
  readonly pool = new MemberPool();

  constructor(
    readonly base: ClusterState,
    readonly now: number,
  ) {}

  /** Current copies (read-only view). */
  get copies(): Readonly<Record<string, CopyInfo>> {
    return this.copiesW ?? this.base.copies;
  }
  /** Current copy record. */
  copy(id: string): CopyInfo | undefined {
    const c = this.copies;
    return own(c, id);
  }
  /** Inserts or replaces a copy record. */
  setCopy(c: CopyInfo): void {
    if (this.copiesW === null) this.copiesW = cloneRecord(this.base.copies);
    this.copiesW[c.copyId] = c;
  }
  /** Forgets a copy record. */
  deleteCopy(id: string): void {
    if (this.copiesW === null) this.copiesW = cloneRecord(this.base.copies);
    delete this.copiesW[id];
  }

  /** Current leader phase. */
  get leader(): LeaderPhase {
    return this.leaderW ?? this.base.leader;
  }
  set leader(l: LeaderPhase) {
    this.leaderW = l;
  }
  /** Current edges. */
  get edges(): readonly Edge[] {
    return this.edgesW ?? this.base.edges;
  }
  set edges(e: readonly Edge[]) {
    this.edgesW = e;
  }

  /** Working copy of app `name` (undefined when it does not exist). */
  app(name: string): AppTx | undefined {
    let a = this.appTxs.get(name);
    if (a === undefined) {
      const b = Object.prototype.hasOwnProperty.call(this.base.apps, name) ? this.base.apps[name] : undefined;
      if (b === undefined) return undefined;
      a = new AppTx(name, b, b.spec, this.fenced);
      this.appTxs.set(name, a);
    }
    return a;
  }
  /** Declares a new app (empty, not activated). */
  createApp(spec: AppSpec): AppTx {
    const a = new AppTx(spec.name, undefined, spec, this.fenced);
    this.appTxs.set(spec.name, a);
    return a;
  }
  /** All app names, sorted. */
  appNames(): string[] {
    const names = new Set(Object.keys(this.base.apps));
    for (const n of this.appTxs.keys()) names.add(n);
    return [...names].sort(cmpStr);
  }
  /** Copies of `app` with status UP, sorted by id. */
  upCopies(app: string): CopyInfo[] {
    const out: CopyInfo[] = [];
    const copies = this.copies;
    for (const id in copies) {
      const c = copies[id]!;
      if (c.app === app && c.status === 'UP') out.push(c);
    }
    return out.sort((a, b) => cmpStr(a.copyId, b.copyId));
  }

  /** Ends the decision: the new state (or the input one when nothing changed) and commands. */
  commit(): Decision {
    const base = this.base;
    let appsChanged = false;
    const apps: Record<string, AppState> = { ...base.apps };
    const changes: { name: string; before: AppState | undefined; after: AppState; rs: number[] }[] = [];
    for (const name of [...this.appTxs.keys()].sort(cmpStr)) {
      const at = this.appTxs.get(name)!;
      const { app, changedRs } = at.finish();
      if (app !== at.base) {
        appsChanged = true;
        apps[name] = app;
      }
      if (changedRs.length > 0) changes.push({ name, before: at.base, after: app, rs: changedRs });
    }
    const changed =
      appsChanged ||
      this.copiesW !== null ||
      (this.edgesW !== null && this.edgesW !== base.edges) ||
      (this.leaderW !== null && this.leaderW !== base.leader);
    const notes = this.notes;
    const moved = this.moved;
    if (!changed) {
      // A StopCopy may be due without any state change (a failed copy that held no roles).
      const commands = base.leader.passive ? [] : [...this.stops];
      return withMoved({ state: base, commands, notes }, moved);
    }
    const state: ClusterState = {
      version: base.version + 1,
      apps: appsChanged ? apps : base.apps,
      copies: this.copiesW ?? base.copies,
      edges: this.edgesW ?? base.edges,
      leader: this.leaderW ?? base.leader,
    };
    let commands: ControllerCommand[];
    if (state.leader.passive) commands = []; // R-HM-3: a passive leader sends nothing.
    else if (this.fullResync) commands = fullResyncCommands(state, this.stops);
    else commands = diffCommands(base, state, changes, this.stops, this.fullFor);
    return withMoved({ state, commands, notes }, moved);
  }
}

/**
 * Shallow copy of a record. A key loop is ~4x faster than object spread on the large
 * dictionary-mode records a cluster with 1,000 copies has, and this runs on every decision.
 */
function cloneRecord<T>(r: Readonly<Record<string, T>>): Record<string, T> {
  const out: Record<string, T> = {};
  const keys = Object.keys(r);
  for (let i = 0; i < keys.length; i++) out[keys[i]!] = r[keys[i]!]!;
  return out;
}

function withMoved(d: Decision, moved: { active: number; standby: number } | undefined): Decision {
  return moved === undefined ? d : { ...d, moved };
}

/**
 * What the command builders need to know about one copy id, looked up once per decision: its
 * shared MemberView per role, liveness, addresses before and after, and its pending entries.
 */
interface CopyCtx {
  readonly id: string;
  /** Address in the state the views describe (empty when the copy is gone). */
  readonly address: string;
  readonly incarnation: number;
  /** Gets per-RS entries: exists, not failed, no full resync (which sends its complete set). */
  readonly live: boolean;
  views: [MemberView | undefined, MemberView | undefined, MemberView | undefined];
  entries: RoleEntry[] | null;
}

/**
 * Builds MemberView lists, sharing one view object per (copy, role): one map lookup per member
 * (by copy id, no key strings built), which matters when a failure changes thousands of RS.
 */
class Views {
  private readonly ctxs = new Map<string, CopyCtx>();
  constructor(
    private readonly copies: Readonly<Record<string, CopyInfo>>,
    private readonly fullFor: ReadonlySet<string> = EMPTY_SET,
  ) {}
  ctx(id: string): CopyCtx {
    let c = this.ctxs.get(id);
    if (c === undefined) {
      const info = own(this.copies, id);
      const live = info !== undefined && info.status !== 'OUT_OF_SERVICE' && info.failed !== true && !this.fullFor.has(id);
      c = { id, address: info?.address ?? '', incarnation: info?.incarnation ?? 0, live, views: [undefined, undefined, undefined], entries: null };
      this.ctxs.set(id, c);
    }
    return c;
  }
  viewOf(c: CopyCtx, role: Role): MemberView {
    const i = role === 'ACTIVE' ? 0 : role === 'STANDBY' ? 1 : 2;
    return (c.views[i] ??= { copyId: c.id, address: c.address, incarnation: c.incarnation, role });
  }
  view(m: Member): MemberView {
    return this.viewOf(this.ctx(m.copyId), m.role);
  }
  list(members: readonly Member[]): MemberView[] {
    const out: MemberView[] = new Array(members.length);
    for (let i = 0; i < members.length; i++) out[i] = this.view(members[i]!);
    return out;
  }
  /** Copies that got per-RS entries. */
  withEntries(): CopyCtx[] {
    const out: CopyCtx[] = [];
    for (const c of this.ctxs.values()) if (c.entries !== null) out.push(c);
    return out;
  }
}

const EMPTY_SET: ReadonlySet<string> = new Set();

/** A route for one RS (`previous` supplied by the caller). */
export function routeOf(a: RsAssignment, view: readonly MemberView[], previous: RouteChange['previous']): RouteChange {
  let active: RouteChange['active'] = null;
  let n = 0;
  for (let i = 0; i < view.length; i++) if (view[i]!.role === 'STANDBY') n++;
  // Sized up front: `[]` grown by push reserves room for 17 (a failure publishes ~1,000 routes).
  const standbys: MemberView[] = new Array(n);
  n = 0;
  for (let i = 0; i < view.length; i++) {
    const v = view[i]!;
    if (v.role === 'ACTIVE') active = { copyId: v.copyId, address: v.address };
    else if (v.role === 'STANDBY') standbys[n++] = v;
  }
  return { app: a.app, rs: a.rs, epoch: a.epoch, active, previous, standbys };
}

/** Per-RS commands for a normal decision: only what changed. */
function diffCommands(
  before: ClusterState,
  after: ClusterState,
  changes: readonly { name: string; before: AppState | undefined; after: AppState; rs: number[] }[],
  stops: readonly Stop[],
  fullFor: ReadonlySet<string>,
): ControllerCommand[] {
  // Failed copies get StopCopy, removed ones are gone, copies with a full resync get their
  // complete set instead: none of them gets per-RS entries (CopyCtx.live).
  const views = new Views(after.copies, fullFor);
  const routes: RouteChange[] = [];
  const ctxs: CopyCtx[] = [];
  for (const ch of changes) {
    const rsBefore = ch.before?.rs;
    const rsAfter = ch.after.rs;
    const list = ch.rs;
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      const old = rsBefore?.[r];
      const neu = rsAfter[r]!;
      const nm = neu.members;
      const view: MemberView[] = new Array(nm.length);
      let entryA: RoleEntry | undefined;
      let entryS: RoleEntry | undefined;
      let entryO: RoleEntry | undefined;
      let newActive: CopyCtx | null = null;
      for (let j = 0; j < nm.length; j++) {
        const c = views.ctx(nm[j]!.copyId);
        ctxs[j] = c; // indexed: `length = 0` would drop the scratch's storage
        view[j] = views.viewOf(c, nm[j]!.role);
      }
      for (let j = 0; j < nm.length; j++) {
        const role = nm[j]!.role;
        const c = ctxs[j]!;
        if (role === 'ACTIVE') newActive = c;
        if (role === 'OUT_OF_SERVICE' || !c.live) continue;
        if (role === 'ACTIVE') addEntry(c, (entryA ??= roleEntry(ch.name, neu, 'ACTIVE', view)));
        else addEntry(c, (entryS ??= roleEntry(ch.name, neu, 'STANDBY', view)));
      }
      let oldActive: string | null = null;
      if (old !== undefined) {
        const om = old.members;
        for (let j = 0; j < om.length; j++) {
          const m = om[j]!;
          if (m.role === 'ACTIVE') oldActive = m.copyId;
          if (m.role === 'OUT_OF_SERVICE') continue;
          let still = false;
          for (let x = 0; x < nm.length; x++) if (nm[x]!.copyId === m.copyId && nm[x]!.role !== 'OUT_OF_SERVICE') still = true;
          if (still) continue;
          const c = views.ctx(m.copyId);
          if (c.live) addEntry(c, (entryO ??= roleEntry(ch.name, neu, 'OUT_OF_SERVICE', view)));
        }
      }
      const newId = newActive === null ? null : newActive.id;
      const oldAddr = oldActive === null ? '' : (own(before.copies, oldActive)?.address ?? '');
      const newAddr = newActive === null ? '' : newActive.address;
      if (oldActive !== newId || old === undefined || old.epoch !== neu.epoch || oldAddr !== newAddr) {
        routes.push(routeOf(neu, view, oldActive === null ? null : { copyId: oldActive, address: oldAddr }));
      }
    }
  }
  const out: ControllerCommand[] = [...stops];
  const ids = new Set<string>(fullFor);
  const byId = new Map<string, CopyCtx>();
  for (const c of views.withEntries()) {
    ids.add(c.id);
    byId.set(c.id, c);
  }
  for (const id of [...ids].sort(cmpStr)) {
    const c = own(after.copies, id);
    if (c === undefined || c.status === 'OUT_OF_SERVICE' || c.failed === true) continue;
    if (fullFor.has(id)) out.push(fullRoleSetOf(after, c, views));
    else out.push({ type: 'SetRoles', copyId: id, address: c.address, incarnation: c.incarnation, entries: byId.get(id)!.entries!, full: false });
  }
  if (routes.length > 0) out.push({ type: 'PublishRoutes', routes });
  return out;
}

function addEntry(c: CopyCtx, e: RoleEntry): void {
  if (c.entries === null) c.entries = [e];
  else c.entries.push(e);
}

function roleEntry(app: string, a: RsAssignment, role: RoleEntry['role'], members: readonly MemberView[]): RoleEntry {
  return { app, rs: a.rs, role, epoch: a.epoch, version: a.version, members };
}

/** Everything, for the end of the passive phase. */
function fullResyncCommands(state: ClusterState, stops: readonly Stop[]): ControllerCommand[] {
  const views = new Views(state.copies);
  const out: ControllerCommand[] = [];
  const stopped = new Set(stops.map((s) => s.copyId));
  for (const s of stops) out.push(s);
  for (const id of Object.keys(state.copies).sort(cmpStr)) {
    const c = state.copies[id]!;
    if (c.status === 'OUT_OF_SERVICE' || c.failed === true || stopped.has(id)) continue;
    out.push(fullRoleSetOf(state, c, views));
  }
  const routes: RouteChange[] = [];
  for (const name of Object.keys(state.apps).sort(cmpStr)) {
    for (const a of state.apps[name]!.rs) routes.push(routeOf(a, views.list(a.members), null));
  }
  out.push({ type: 'PublishRoutes', routes });
  return out;
}

/** The complete role set of one copy (ACTIVE and STANDBY entries, ascending RS). */
function fullRoleSetOf(state: ClusterState, c: CopyInfo, views: Views): Extract<ControllerCommand, { type: 'SetRoles' }> {
  const entries: RoleEntry[] = [];
  const app = own(state.apps, c.app);
  if (app !== undefined && app.activated) {
    const idx = peekIndex(app);
    const slot = idx.slotOf.get(c.copyId);
    if (slot !== undefined) {
      for (const r of listedRs(idx, slot, app.rs)) {
        const a = app.rs[r]!;
        for (const m of a.members) {
          if (m.copyId !== c.copyId || m.role === 'OUT_OF_SERVICE') continue;
          entries.push({ app: c.app, rs: r, role: m.role, epoch: a.epoch, version: a.version, members: views.list(a.members) });
        }
      }
    }
  }
  return { type: 'SetRoles', copyId: c.copyId, address: c.address, incarnation: c.incarnation, entries, full: true };
}

/** Full role set of `copyId` in `state` (see {@link fullRoleSetOf}). */
export function fullRoleSetFor(state: ClusterState, copyId: string): Extract<ControllerCommand, { type: 'SetRoles' }> {
  const c = own(state.copies, copyId);
  if (c === undefined) throw new RangeError(`unknown copy ${copyId}`);
  return fullRoleSetOf(state, c, new Views(state.copies));
}

/** MemberView list of an assignment in `state` (for read-side helpers). */
export function memberViews(state: ClusterState, members: readonly Member[]): MemberView[] {
  return new Views(state.copies).list(members);
}

/**
 * The pending moves (per RS) that still hold in the final assignments: `written` (this
 * decision's copy, null when untouched) or else `base`; `base` itself when untouched and all
 * hold, undefined when none is left.
 */
function keepHolding<M>(
  written: Record<string, M> | null,
  base: Record<string, M> | undefined,
  holds: (m: M, members: RsAssignment['members'] | undefined) => boolean,
  rs: readonly RsAssignment[],
): Record<string, M> | undefined {
  const cur = written ?? base;
  if (cur === undefined) return undefined;
  let out: Record<string, M> | undefined;
  let dropped = false;
  for (const r in cur) {
    const m = cur[r]!;
    if (holds(m, rs[Number(r)]?.members)) (out ??= {})[r] = m;
    else dropped = true;
  }
  if (written === null && !dropped) return base;
  return out;
}
