/**
 * Output of the `understudy` command: tables for people, plain JSON for scripts. Pure
 * functions of the controller's responses (and the current time, passed in) so tests can
 * call them directly.
 */
import Table from 'cli-table3';
import {
  Partitioning,
  copyStatusName,
  modeName,
  roleName,
  Role,
  type AppState,
  type ApplyTopologyResponse,
  type CopyState,
  type DisableCopyResponse,
  type DrainCopyResponse,
  type Edge,
  type EnableCopyResponse,
  type GetStatusResponse,
  type Member,
  type RsAssignment,
  type SwitchoverResponse,
  type MoveRsResponse,
} from '@understudy/proto';

/** Options of {@link renderStatus}. */
export interface RenderStatusOptions {
  /** Also render the per-RS assignment table (the response must include assignments). */
  readonly assignments?: boolean;
  /** "Now" for the last-heard column, in Unix ms. @default Date.now() */
  readonly nowMs?: number;
}

/** A plain table (no colours, so output is the same on a terminal, in a pipe and in tests). */
function table(head: string[]): Table.Table {
  return new Table({ head, style: { head: [], border: [], compact: false } });
}

function modeLabel(m: number): string {
  return modeName(m) ?? `UNSPECIFIED(${m})`;
}

function statusLabel(s: number): string {
  return copyStatusName(s) ?? `UNSPECIFIED(${s})`;
}

function roleLabel(r: number): string {
  return roleName(r) ?? `UNSPECIFIED(${r})`;
}

/**
 * How long ago `unixMs` was, relative to `nowMs`: `never`, `850ms ago`, `12.3s ago`,
 * `4m 05s ago`, `2h 03m ago`, or `in the future` for clock skew.
 */
export function formatAge(unixMs: number, nowMs: number): string {
  if (!unixMs || unixMs <= 0) return 'never';
  const d = nowMs - unixMs;
  if (d < -1000) return 'in the future';
  if (d < 1000) return `${Math.max(0, Math.round(d))}ms ago`;
  if (d < 60_000) return `${(d / 1000).toFixed(1)}s ago`;
  if (d < 3_600_000) return `${Math.floor(d / 60_000)}m ${String(Math.floor((d % 60_000) / 1000)).padStart(2, '0')}s ago`;
  return `${Math.floor(d / 3_600_000)}h ${String(Math.floor((d % 3_600_000) / 60_000)).padStart(2, '0')}m ago`;
}

/** The leader table: id, address, term, passive, state version. */
export function renderLeader(s: GetStatusResponse): string {
  const t = table(['leader', 'address', 'term', 'passive', 'state version']);
  t.push([s.leaderId || '(none)', s.leaderAddress || '-', String(s.leaderTerm), s.passive ? 'yes (waiting for copies)' : 'no', String(s.stateVersion)]);
  return t.toString();
}

/** The applications table: mode, RS count, standbys, activated, RS with an active / fully replicated. */
export function renderApps(apps: readonly AppState[]): string {
  if (apps.length === 0) return 'no applications declared (understudy apply -f FILE)';
  const t = table(['app', 'mode', 'RS', 'standbys', 'min copies', 'activated', 'RS with active', 'RS fully replicated']);
  for (const a of apps) {
    const spec = a.spec;
    const rsCount = spec?.rsCount ?? 0;
    t.push([
      spec?.name ?? '?',
      modeLabel(spec?.mode ?? 0),
      String(rsCount),
      String(spec?.standbys ?? 0),
      String(spec?.minCopies ?? 0),
      a.activated ? 'yes' : 'no',
      `${a.rsWithActive}/${rsCount}`,
      `${a.rsFullyReplicated}/${rsCount}`,
    ]);
  }
  return t.toString();
}

/** The copies table: id, app, host, address, status, #active, #standby, last heard. */
export function renderCopies(copies: readonly CopyState[], nowMs: number): string {
  if (copies.length === 0) return 'no copies registered';
  const t = table(['copy', 'app', 'host', 'address', 'status', 'active', 'standby', 'last heard']);
  for (const c of copies) {
    t.push([c.copyId, c.app, c.host, c.address, statusLabel(c.status), String(c.activeCount), String(c.standbyCount), formatAge(c.lastHeardUnixMs, nowMs)]);
  }
  return t.toString();
}

function membersWith(members: readonly Member[], role: Role): string {
  // A standby still catching up (no state yet) is marked: it is not a failover target yet.
  const ids = members.filter((m) => m.role === role).map((m) => (m.catchingUp ? `${m.copyId} (catching up)` : m.copyId));
  return ids.length === 0 ? '-' : ids.join(', ');
}

/** The assignments table: per RS the epoch, active copy, standbys (promotion order) and out-of-service copies. */
export function renderAssignments(assignments: readonly RsAssignment[]): string {
  if (assignments.length === 0) return 'no assignments';
  const t = table(['app', 'RS', 'epoch', 'active', 'standbys', 'out of service']);
  for (const a of assignments) {
    const active = a.members.find((m) => m.role === Role.ROLE_ACTIVE);
    t.push([a.app, String(a.rs), String(a.epoch), active ? active.copyId : '(none)', membersWith(a.members, Role.ROLE_STANDBY), membersWith(a.members, Role.ROLE_OUT_OF_SERVICE)]);
  }
  return t.toString();
}

/** The data-flow map: one row per edge. */
export function renderEdges(edges: readonly Edge[]): string {
  const t = table(['from', 'to', 'key field']);
  for (const e of edges) t.push([e.from, e.to, e.keyField]);
  return t.toString();
}

/**
 * `understudy status`: leader, applications, copies, the data-flow map (when there are
 * edges) and, with `assignments`, one row per RS.
 */
export function renderStatus(s: GetStatusResponse, opts: RenderStatusOptions = {}): string {
  const nowMs = opts.nowMs ?? Date.now();
  const parts = [
    `Leader\n${renderLeader(s)}`,
    `Applications\n${renderApps(s.apps)}`,
    `Copies\n${renderCopies(s.copies, nowMs)}`,
  ];
  if (s.edges.length > 0) parts.push(`Data-flow map\n${renderEdges(s.edges)}`);
  if (s.moves.length > 0) parts.push(`Moves in progress (target catching up)\n${renderMoves(s.moves, nowMs)}`);
  if (s.standbyMoves.length > 0) parts.push(`Standby moves in progress (balancing; new standby catching up)\n${renderStandbyMoves(s.standbyMoves, nowMs)}`);
  if (opts.assignments) parts.push(`Assignments\n${renderAssignments(s.assignments)}`);
  return `${parts.join('\n\n')}\n`;
}

/** `understudy apply`: the new state version and what changed. */
export function renderApplyResult(file: string, r: ApplyTopologyResponse): string {
  const head = `applied ${file}: state version ${r.stateVersion}`;
  if (r.changes.length === 0) return `${head} (no changes)\n`;
  return `${head}\n${r.changes.map((c) => `  - ${c}`).join('\n')}\n`;
}

/** `understudy switchover`: who is active now, at which epoch, and the member list. */
export function renderSwitchover(app: string, rs: number, r: SwitchoverResponse): string {
  const a = r.assignment;
  if (!a) return `switchover of ${app}/${rs} done\n`;
  const active = a.members.find((m) => m.role === Role.ROLE_ACTIVE);
  const ms = (x: number): string => `${x < 10 ? x.toFixed(2) : x.toFixed(1)} ms`;
  // pause_ms 0 and not paused: nothing was handed over from a live copy (e.g. the old active had failed).
  const pause = r.paused ? ` (paused ${ms(r.pauseMs)})` : r.pauseMs > 0 ? ` (switched in ${ms(r.pauseMs)} without a pause: ${unpaused(r.pauseDetail)}; the epoch fenced it)` : '';
  return `switchover of ${app}/${rs} done: active is ${active ? `${active.copyId} (${active.address})` : '(none)'} at epoch ${a.epoch}${pause}\n${renderAssignments([a])}\n`;
}

/** Pending RS moves: app/RS, from → to, since when, why. */
export function renderMoves(moves: GetStatusResponse['moves'], nowMs: number): string {
  const t = table(['RS', 'from', 'to', 'since', 'reason']);
  for (const m of moves) t.push([`${m.app}/${m.rs}`, m.fromCopyId, m.toCopyId, formatAge(m.sinceUnixMs, nowMs), m.reason || '-']);
  return t.toString();
}

/** Balancing's pending standby moves: app/RS, leaving standby → new standby, since when. */
export function renderStandbyMoves(moves: GetStatusResponse['standbyMoves'], nowMs: number): string {
  const t = table(['RS', 'from', 'to', 'since']);
  for (const m of moves) t.push([`${m.app}/${m.rs}`, m.fromCopyId, m.toCopyId, formatAge(m.sinceUnixMs, nowMs)]);
  return t.toString();
}

/** `understudy move`: from → to, epoch, and how long the RS paused. */
export function renderMove(app: string, rs: number, r: MoveRsResponse): string {
  const ms = (x: number): string => `${x < 10 ? x.toFixed(2) : x.toFixed(1)} ms`;
  const pause = r.paused ? `paused ${ms(r.pauseMs)}` : `switched in ${ms(r.pauseMs)} without a pause (${unpaused(r.pauseDetail)}; the epoch fenced it)`;
  const first = r.caughtUpFirst ? `; ${r.toCopyId} caught up as a standby first` : '';
  return `moved ${app}/${rs}: ${r.fromCopyId || '(none)'} -> ${r.toCopyId} at epoch ${r.epoch} (${pause}; total ${ms(r.totalMs)}${first})\n`;
}

/** Why a handoff went on without a pause, for a sentence. */
function unpaused(detail: string): string {
  return detail ? `the old active was not paused: ${detail}` : 'the old active did not answer the pause request';
}

/** `understudy drain`. */
export function renderDrain(copyId: string, r: DrainCopyResponse): string {
  return `drained ${copyId}: moved ${r.movedActive} active and ${r.movedStandby} standby RS; it holds nothing until enabled\n`;
}

/** `understudy disable`. */
export function renderDisable(copyId: string, r: DisableCopyResponse): string {
  return `disabled ${copyId}: ${r.failedOver} RS failed over; it holds nothing until enabled\n`;
}

/** `understudy enable`. */
export function renderEnable(copyId: string, r: EnableCopyResponse): string {
  return `enabled ${copyId}: status ${statusLabel(r.status)}\n`;
}

const PARTITIONING_NAMES: Record<number, string> = { [Partitioning.PARTITIONING_HASH]: 'HASH', [Partitioning.PARTITIONING_RANGE]: 'RANGE' };

/** Enum-valued fields of the controller's messages, by field name. */
const ENUM_FIELDS: Record<string, (v: number) => string> = {
  mode: modeLabel,
  status: statusLabel,
  role: roleLabel,
  partitioning: (v) => PARTITIONING_NAMES[v] ?? `UNSPECIFIED(${v})`,
};

/**
 * A response as plain JSON data for `--json`: field names as in the generated types
 * (camelCase), enums as their names (`DISTRIBUTED`, `UP`, `ACTIVE`, `HASH`) instead of numbers.
 */
export function toJsonView(value: unknown, key?: string): unknown {
  if (Array.isArray(value)) return value.map((v) => toJsonView(v, key));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = toJsonView(v, k);
    return out;
  }
  if (typeof value === 'number' && key !== undefined && key in ENUM_FIELDS) return ENUM_FIELDS[key]!(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** One JSON object on one line (what `--json` prints). */
export function renderJson(value: unknown): string {
  return `${JSON.stringify(toJsonView(value))}\n`;
}
