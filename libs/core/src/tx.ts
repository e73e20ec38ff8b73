/**
 * A transaction over `ClusterState`: one decision's copy-on-write working set. Handlers and
 * reconcile read and write through it; `commit` normalises, bumps versions exactly once and
 * derives the commands from the difference between the old and the new state. Deriving commands
 * from the diff (instead of emitting them step by step) is what keeps them minimal and always in
 * agreement with the persisted state.
 */
import type { AppSpec, AppState, ClusterState, CopyInfo, Edge, LeaderPhase, Member, RsAssignment } from './model';
import type { ControllerCommand, Decision, MemberView, RoleEntry, RouteChange } from './events';
import { applyChange, buildIndex, peekIndex, setStandbyTarget, storeIndex, takeIndex, type AppIndex } from './derived';
import { cmpStr, MemberPool, sameMembers } from './members';

const EMPTY: readonly Member[] = Object.freeze([]);

/** Working copy of one application. */
export class AppTx {
  spec: AppSpec;
  activated: boolean;
  /** RS id → its assignment in the base state (first write only). */
  readonly changed = new Map<number, RsAssignment>();
  /** RS activated in this transaction (epoch = base epoch + 1). */
  readonly activations = new Set<number>();
  /** RS re-sent although members and epoch are unchanged (a member's address changed). */
  readonly touched = new Set<number>();
  private rsArr: RsAssignment[];
  private cloned = false;
  private index: AppIndex | null = null;

  constructor(
    readonly name: string,
    readonly base: AppState | undefined,
    spec: AppSpec,
  ) {
    this.spec = spec;
    this.activated = base?.activated ?? false;
    if (base !== undefined) this.rsArr = base.rs as RsAssignment[];
    else {
      this.rsArr = new Array(spec.rsCount);
      for (let r = 0; r < spec.rsCount; r++) this.rsArr[r] = { app: name, rs: r, epoch: 0, version: 0, members: EMPTY };
      this.cloned = true;
    }
  }

  /** Current assignment of RS r. */
  get(r: number): RsAssignment {
    return this.rsArr[r]!;
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
    if (!this.cloned) {
      this.rsArr = this.rsArr.slice();
      this.cloned = true;
    }
    const cur = this.rsArr[r]!;
    let base = this.changed.get(r);
    if (base === undefined) {
      base = cur;
      this.changed.set(r, cur);
    }
    if (activate) this.activations.add(r);
    const epoch = this.activations.has(r) ? base.epoch + 1 : base.epoch;
    applyChange(idx, r, cur.members, members);
    this.rsArr[r] = { app: this.name, rs: r, epoch, version: base.version + 1, members };
  }

  /** Forces RS r to be re-sent with a new version (members unchanged). */
  touch(r: number): void {
    this.touched.add(r);
    this.put(r, this.rsArr[r]!.members, false);
  }

  /**
   * Ends the transaction for this app: reverts RS whose net change is nil (so versions only move
   * on real changes), returns the new AppState (or the base one when nothing changed) and the
   * RS ids that really changed, in ascending order.
   */
  finish(): { app: AppState; changedRs: number[] } {
    const changedRs: number[] = [];
    for (const [r, base] of this.changed) {
      const cur = this.rsArr[r]!;
      if (!this.activations.has(r) && !this.touched.has(r) && sameMembers(base.members, cur.members)) this.rsArr[r] = base;
      else changedRs.push(r);
    }
    changedRs.sort((a, b) => a - b);
    const b = this.base;
    const rs = changedRs.length === 0 && b !== undefined ? b.rs : this.rsArr;
    let app: AppState;
    if (b !== undefined && rs === b.rs && b.spec === this.spec && b.activated === this.activated) app = b;
    else app = { spec: this.spec, activated: this.activated, rs };
    if (this.index !== null) storeIndex(app.rs, this.index);
    return { app, changedRs };
  }
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
    return Object.prototype.hasOwnProperty.call(c, id) ? c[id] : undefined;
  }
  /** Inserts or replaces a copy record. */
  setCopy(c: CopyInfo): void {
    if (this.copiesW === null) this.copiesW = { ...this.base.copies };
    this.copiesW[c.copyId] = c;
  }
  /** Forgets a copy record. */
  deleteCopy(id: string): void {
    if (this.copiesW === null) this.copiesW = { ...this.base.copies };
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
      a = new AppTx(name, b, b.spec);
      this.appTxs.set(name, a);
    }
    return a;
  }
  /** Declares a new app (empty, not activated). */
  createApp(spec: AppSpec): AppTx {
    const a = new AppTx(spec.name, undefined, spec);
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
    for (const c of Object.values(this.copies)) if (c.app === app && c.status === 'UP') out.push(c);
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

function withMoved(d: Decision, moved: { active: number; standby: number } | undefined): Decision {
  return moved === undefined ? d : { ...d, moved };
}

/** Builds MemberView lists, sharing the view object of each (copy, role). */
class Views {
  private readonly memo = new Map<string, MemberView>();
  constructor(private readonly copies: Readonly<Record<string, CopyInfo>>) {}
  view(m: Member): MemberView {
    const key = m.role[0] + m.copyId;
    let v = this.memo.get(key);
    if (v === undefined) {
      v = { copyId: m.copyId, address: this.copies[m.copyId]?.address ?? '', role: m.role };
      this.memo.set(key, v);
    }
    return v;
  }
  list(members: readonly Member[]): MemberView[] {
    return members.map((m) => this.view(m));
  }
}

/** A route for one RS (`previous` supplied by the caller). */
export function routeOf(a: RsAssignment, view: readonly MemberView[], previous: RouteChange['previous']): RouteChange {
  let active: RouteChange['active'] = null;
  const standbys: MemberView[] = [];
  for (const v of view) {
    if (v.role === 'ACTIVE') active = { copyId: v.copyId, address: v.address };
    else if (v.role === 'STANDBY') standbys.push(v);
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
  const views = new Views(after.copies);
  const buckets = new Map<string, RoleEntry[]>();
  const routes: RouteChange[] = [];
  const live = (id: string): boolean => {
    const c = after.copies[id];
    // Failed copies get StopCopy, removed ones are gone: neither gets role entries.
    return c !== undefined && c.status !== 'OUT_OF_SERVICE' && c.failed !== true && !fullFor.has(id);
  };
  const add = (id: string, e: RoleEntry): void => {
    let b = buckets.get(id);
    if (b === undefined) buckets.set(id, (b = []));
    b.push(e);
  };
  for (const ch of changes) {
    for (const r of ch.rs) {
      const old = ch.before?.rs[r];
      const neu = ch.after.rs[r]!;
      const view = views.list(neu.members);
      const mk = (role: RoleEntry['role']): RoleEntry => ({ app: ch.name, rs: r, role, epoch: neu.epoch, version: neu.version, members: view });
      let entryA: RoleEntry | undefined;
      let entryS: RoleEntry | undefined;
      let newActive: string | null = null;
      for (const m of neu.members) {
        if (m.role === 'ACTIVE') newActive = m.copyId;
        if (m.role === 'OUT_OF_SERVICE' || !live(m.copyId)) continue;
        if (m.role === 'ACTIVE') add(m.copyId, (entryA ??= mk('ACTIVE')));
        else add(m.copyId, (entryS ??= mk('STANDBY')));
      }
      let oldActive: string | null = null;
      if (old !== undefined) {
        let entryO: RoleEntry | undefined;
        for (const m of old.members) {
          if (m.role === 'ACTIVE') oldActive = m.copyId;
          if (m.role === 'OUT_OF_SERVICE' || !live(m.copyId)) continue;
          let still = false;
          for (const n of neu.members) if (n.copyId === m.copyId && n.role !== 'OUT_OF_SERVICE') still = true;
          if (!still) add(m.copyId, (entryO ??= mk('OUT_OF_SERVICE')));
        }
      }
      const oldAddr = oldActive === null ? '' : (before.copies[oldActive]?.address ?? '');
      const newAddr = newActive === null ? '' : (after.copies[newActive]?.address ?? '');
      if (oldActive !== newActive || old === undefined || old.epoch !== neu.epoch || oldAddr !== newAddr) {
        routes.push(routeOf(neu, view, oldActive === null ? null : { copyId: oldActive, address: oldAddr }));
      }
    }
  }
  const out: ControllerCommand[] = [...stops];
  const ids = new Set([...buckets.keys(), ...fullFor]);
  for (const id of [...ids].sort(cmpStr)) {
    const c = after.copies[id];
    if (c === undefined || c.status === 'OUT_OF_SERVICE' || c.failed === true) continue;
    if (fullFor.has(id)) out.push(fullRoleSetOf(after, c, views));
    else out.push({ type: 'SetRoles', copyId: id, address: c.address, incarnation: c.incarnation, entries: buckets.get(id)!, full: false });
  }
  if (routes.length > 0) out.push({ type: 'PublishRoutes', routes });
  return out;
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
  const app = state.apps[c.app];
  if (app !== undefined && app.activated) {
    const idx = peekIndex(app);
    const slot = idx.slotOf.get(c.copyId);
    if (slot !== undefined) {
      const list = [...idx.rsOf[slot]!].sort((a, b) => a - b);
      for (const r of list) {
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
  const c = state.copies[copyId];
  if (c === undefined) throw new RangeError(`unknown copy ${copyId}`);
  return fullRoleSetOf(state, c, new Views(state.copies));
}

/** MemberView list of an assignment in `state` (for read-side helpers). */
export function memberViews(state: ClusterState, members: readonly Member[]): MemberView[] {
  return new Views(state.copies).list(members);
}
