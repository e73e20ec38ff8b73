/**
 * The fault detector of the Fault Manager (R-FM, R-DFM-3, R-HM-6, DESIGN §7): pure logic, no
 * I/O, no clock, no timers. The shell feeds events with the current time —
 * `detect(state, event, now) → { state, reports, probesDue }` — and sends the reports to the
 * controller and the probes to the copies.
 *
 * Rules, per watched copy (copy id + incarnation, with its application's compiled policy):
 * - CRASH: its Attach stream broke (reported at once).
 * - HANG: no heartbeat for `missedHeartbeats × heartbeatIntervalMs` (the hello counts as one).
 * - UNHEALTHY: `breachSamples` heartbeats in a row over any nonzero threshold.
 * - PROBE_TIMEOUT: a progress probe not answered ok within `probeTimeoutMs` (an answer with
 *   ok=false fails at once).
 * - Each (copy id, incarnation) is reported at most once; copy faults are never delayed.
 * - HOST: additionally, when every watched copy of one host (at least 2) was lost (CRASH or
 *   HANG) within `hostFaultWindowMs`, one HOST report names them all (the controller answers
 *   DUPLICATE for the ones already failed).
 * - A newer incarnation attaching replaces the older one; an older one is refused.
 *
 * Performance and bounds: the state is updated IN PLACE and returned (copying a map of up to
 * `maxWatched` copies per heartbeat would cost O(n) per event); callers must treat the input
 * state as consumed. Deadlines live in a min-heap with lazy invalidation (one live entry per
 * copy), so a Sweep costs O(due · log n), not O(n). Lost copies are forgotten
 * `hostFaultWindowMs` after their loss; outstanding probes per copy are capped.
 */
import type { CompiledDetectionPolicy } from './detection';

/** Kinds of fault the detector reports (the proto's FaultKind without the prefix). */
export type FaultReportKind = 'CRASH' | 'HANG' | 'UNHEALTHY' | 'PROBE_TIMEOUT' | 'HOST';

/** One health sample from a heartbeat (mirrors the proto's Health). */
export interface HealthSample {
  readonly eventLoopLagMs: number;
  readonly cpuPercent: number;
  readonly rssBytes: number;
  readonly queueDepth: number;
  readonly handledCount?: number;
  readonly heapUsedBytes?: number;
}

/** Who a copy is, as it said in its hello. */
export interface CopyIdentity {
  readonly copyId: string;
  readonly incarnation: number;
  readonly app: string;
  readonly host: string;
  /** host:port of its ADSM service. */
  readonly address: string;
}

/** Inputs of {@link detect}. */
export type DetectorEvent =
  /** A copy attached (its hello), with its application's policy. */
  | ({ readonly type: 'Attached'; readonly policy: CompiledDetectionPolicy } & CopyIdentity)
  | { readonly type: 'Heartbeat'; readonly copyId: string; readonly incarnation: number; readonly health: HealthSample }
  /** The shell sent probe `probeId` to the copy. */
  | { readonly type: 'ProbeSent'; readonly copyId: string; readonly incarnation: number; readonly probeId: number }
  | { readonly type: 'ProbeResult'; readonly copyId: string; readonly incarnation: number; readonly probeId: number; readonly ok: boolean; readonly error?: string }
  /** The copy's stream broke (error, cancel, end): the crash signal. */
  | { readonly type: 'StreamLost'; readonly copyId: string; readonly incarnation: number; readonly reason: string }
  /**
   * The shell ended the copy's stream itself (protocol error, shutdown): forget the copy without
   * a report — it attaches again, maybe to another fault manager. A lost copy is kept (host faults).
   */
  | { readonly type: 'Detached'; readonly copyId: string; readonly incarnation: number }
  /** An application's policy changed (the shell refreshes it from the controller). */
  | { readonly type: 'PolicyChanged'; readonly app: string; readonly policy: CompiledDetectionPolicy }
  /**
   * The shell found a fault itself (e.g. the copy did not answer an unreachable-check): marks
   * the copy reported (and lost, for CRASH/HANG) so it is reported once.
   */
  | { readonly type: 'ExternalFault'; readonly copyId: string; readonly incarnation: number; readonly kind: 'CRASH' | 'HANG'; readonly detail: string }
  /** Periodic: deadlines (hang, probe timeouts), probes due, clean-up. */
  | { readonly type: 'Sweep' };

/** A copy named in a report. */
export type ReportedCopy = CopyIdentity;

/** A fault to report to the controller. */
export interface FaultReport {
  readonly kind: FaultReportKind;
  /** One copy for a copy fault; every lost copy of `host` for a HOST fault. */
  readonly copies: readonly ReportedCopy[];
  readonly host: string;
  readonly detail: string;
  /** When the detector decided (the `now` of the event). */
  readonly atMs: number;
  /**
   * When the evidence began: the first missing heartbeat (HANG), the first breaching sample
   * (UNHEALTHY), the probe's send time (PROBE_TIMEOUT), the first loss (HOST), `atMs` (CRASH).
   * `atMs - sinceMs` is the detection latency.
   */
  readonly sinceMs: number;
}

/** A probe the shell should send now (then feed `ProbeSent`). */
export interface ProbeDue {
  readonly copyId: string;
  readonly incarnation: number;
  /** Deadline to give the copy (the policy's probe timeout). */
  readonly deadlineMs: number;
}

/** Why an event was refused (the shell maps it to a gRPC status). */
export interface DetectorRejection {
  readonly code: 'INVALID_ARGUMENT' | 'FAILED_PRECONDITION' | 'RESOURCE_EXHAUSTED';
  readonly message: string;
}

/** Output of {@link detect}. */
export interface DetectorStep {
  /** The same object as the input state, updated. */
  readonly state: DetectorState;
  readonly reports: readonly FaultReport[];
  readonly probesDue: readonly ProbeDue[];
  /** Set when the event was refused (Attached only); nothing changed. */
  readonly rejection?: DetectorRejection;
  /** Attached: the entry this attach replaced (older incarnation, or a re-attach of the same). */
  readonly replaced?: { readonly copyId: string; readonly incarnation: number };
  /** The event named a copy/incarnation/probe the detector does not (or no longer) watch. */
  readonly ignored?: string;
}

/** Options of {@link createDetector}. */
export interface DetectorOptions {
  /** Copies of one host lost within this window make a HOST fault; also how long lost copies are remembered. */
  readonly hostFaultWindowMs: number;
  /** @default MAX_WATCHED_COPIES */
  readonly maxWatched?: number;
  /** Outstanding probes per copy; more are not sent. @default MAX_OUTSTANDING_PROBES */
  readonly maxOutstandingProbes?: number;
}

/** Default bound of watched copies per detector. */
export const MAX_WATCHED_COPIES = 100_000;
/** Default bound of unanswered probes per copy (a validated policy needs at most 11). */
export const MAX_OUTSTANDING_PROBES = 16;

/** A watched copy as {@link watchedCopies} shows it. */
export interface WatchedCopyView extends CopyIdentity {
  readonly policy: CompiledDetectionPolicy;
  readonly attachedAtMs: number;
  /** Last heartbeat (or the attach time before the first one). */
  readonly lastHeartbeatMs: number;
  readonly health: HealthSample | undefined;
  /** Consecutive breaching samples. */
  readonly breaches: number;
  readonly outstandingProbes: number;
  /** Set once the copy was reported. */
  readonly reported: FaultReportKind | undefined;
  /** Set once the copy was lost (stream broken or hung). */
  readonly lostAtMs: number | undefined;
}

interface Watch {
  readonly copyId: string;
  readonly incarnation: number;
  readonly app: string;
  readonly host: string;
  readonly address: string;
  policy: CompiledDetectionPolicy;
  readonly attachedAtMs: number;
  lastHeartbeatMs: number;
  health: HealthSample | undefined;
  breaches: number;
  firstBreachAtMs: number;
  readonly probes: Map<number, number>;
  nextProbeAtMs: number;
  reported: FaultReportKind | undefined;
  lostAtMs: number | undefined;
  hostReported: boolean;
  /** Time of this copy's live heap entry (Infinity: none). */
  scheduledAt: number;
}

interface HeapEntry {
  readonly at: number;
  readonly copyId: string;
  readonly incarnation: number;
}

/** The detector's state: create with {@link createDetector}; read with {@link watchedCopies}. */
export interface DetectorState {
  readonly hostFaultWindowMs: number;
  readonly maxWatched: number;
  readonly maxOutstandingProbes: number;
  /** @internal by copy id */
  readonly copies: Map<string, Watch>;
  /** @internal host → copy ids */
  readonly hosts: Map<string, Set<string>>;
  /** @internal min-heap on `at` */
  readonly heap: HeapEntry[];
}

/** A new, empty detector. */
export function createDetector(opts: DetectorOptions): DetectorState {
  const window = opts.hostFaultWindowMs;
  if (!Number.isFinite(window) || window < 0) throw new RangeError(`hostFaultWindowMs must be >= 0, got ${window}`);
  const maxWatched = opts.maxWatched ?? MAX_WATCHED_COPIES;
  if (!Number.isSafeInteger(maxWatched) || maxWatched < 1) throw new RangeError(`maxWatched must be a positive integer, got ${maxWatched}`);
  const maxOutstandingProbes = opts.maxOutstandingProbes ?? MAX_OUTSTANDING_PROBES;
  if (!Number.isSafeInteger(maxOutstandingProbes) || maxOutstandingProbes < 1) {
    throw new RangeError(`maxOutstandingProbes must be a positive integer, got ${maxOutstandingProbes}`);
  }
  return { hostFaultWindowMs: window, maxWatched, maxOutstandingProbes, copies: new Map(), hosts: new Map(), heap: [] };
}

/** Apply one event at time `now` (ms, any monotonic-enough clock the shell chooses). */
export function detect(state: DetectorState, event: DetectorEvent, now: number): DetectorStep {
  const out = new StepBuilder(state);
  switch (event.type) {
    case 'Attached':
      onAttached(state, event, now, out);
      break;
    case 'Heartbeat':
      onHeartbeat(state, event, now, out);
      break;
    case 'ProbeSent':
      onProbeSent(state, event, now, out);
      break;
    case 'ProbeResult':
      onProbeResult(state, event, now, out);
      break;
    case 'StreamLost':
      onStreamLost(state, event, now, out);
      break;
    case 'Detached': {
      const w = find(state, event.copyId, event.incarnation, out);
      if (w !== undefined && w.lostAtMs === undefined) remove(state, w);
      break;
    }
    case 'PolicyChanged':
      onPolicyChanged(state, event, now);
      break;
    case 'ExternalFault':
      onExternalFault(state, event, now, out);
      break;
    case 'Sweep':
      onSweep(state, now, out);
      break;
  }
  return out.build();
}

/**
 * The earliest time a Sweep may find something due (a hang deadline, a probe due or timing out,
 * a lost copy to forget); Infinity when nothing is scheduled. Never later than the true next
 * deadline (an entry may be stale, and a Sweep then only reschedules), so a shell that sweeps at
 * this time detects a hang at its deadline instead of up to one sweep period after it.
 */
export function nextDeadline(state: DetectorState): number {
  return state.heap[0]?.at ?? Infinity;
}

/** Every watched copy (lost ones until they are forgotten), ordered by copy id. */
export function watchedCopies(state: DetectorState): WatchedCopyView[] {
  return [...state.copies.values()].sort((a, b) => (a.copyId < b.copyId ? -1 : a.copyId > b.copyId ? 1 : 0)).map(view);
}

/** One watched copy, if watched. */
export function watchedCopy(state: DetectorState, copyId: string): WatchedCopyView | undefined {
  const w = state.copies.get(copyId);
  return w ? view(w) : undefined;
}

// ---------------------------------------------------------------------------------------------

class StepBuilder {
  readonly reports: FaultReport[] = [];
  readonly probesDue: ProbeDue[] = [];
  rejection: DetectorRejection | undefined;
  replaced: { copyId: string; incarnation: number } | undefined;
  ignored: string | undefined;
  constructor(private readonly state: DetectorState) {}
  build(): DetectorStep {
    return {
      state: this.state,
      reports: this.reports,
      probesDue: this.probesDue,
      ...(this.rejection ? { rejection: this.rejection } : {}),
      ...(this.replaced ? { replaced: this.replaced } : {}),
      ...(this.ignored !== undefined ? { ignored: this.ignored } : {}),
    };
  }
}

function view(w: Watch): WatchedCopyView {
  return {
    copyId: w.copyId,
    incarnation: w.incarnation,
    app: w.app,
    host: w.host,
    address: w.address,
    policy: w.policy,
    attachedAtMs: w.attachedAtMs,
    lastHeartbeatMs: w.lastHeartbeatMs,
    health: w.health,
    breaches: w.breaches,
    outstandingProbes: w.probes.size,
    reported: w.reported,
    lostAtMs: w.lostAtMs,
  };
}

function identity(w: Watch): ReportedCopy {
  return { copyId: w.copyId, incarnation: w.incarnation, app: w.app, host: w.host, address: w.address };
}

/** The watch an event refers to, or undefined (with `ignored` set). */
function find(state: DetectorState, copyId: string, incarnation: number, out: StepBuilder): Watch | undefined {
  const w = state.copies.get(copyId);
  if (w === undefined) {
    out.ignored = `copy ${copyId} is not watched`;
    return undefined;
  }
  if (w.incarnation !== incarnation) {
    out.ignored = `copy ${copyId} is watched at incarnation ${w.incarnation}, not ${incarnation}`;
    return undefined;
  }
  return w;
}

function onAttached(state: DetectorState, e: DetectorEvent & { type: 'Attached' }, now: number, out: StepBuilder): void {
  if (typeof e.copyId !== 'string' || e.copyId === '') {
    out.rejection = { code: 'INVALID_ARGUMENT', message: 'copyId must be a non-empty string' };
    return;
  }
  if (!Number.isSafeInteger(e.incarnation) || e.incarnation <= 0) {
    out.rejection = { code: 'INVALID_ARGUMENT', message: `incarnation must be a positive integer, got ${String(e.incarnation)}` };
    return;
  }
  const old = state.copies.get(e.copyId);
  if (old !== undefined && old.incarnation > e.incarnation) {
    out.rejection = {
      code: 'FAILED_PRECONDITION',
      message: `copy ${e.copyId} incarnation ${e.incarnation} is stale: incarnation ${old.incarnation} is attached`,
    };
    return;
  }
  if (old === undefined && state.copies.size >= state.maxWatched) {
    out.rejection = { code: 'RESOURCE_EXHAUSTED', message: `this fault manager already watches ${state.copies.size} copies (the limit)` };
    return;
  }
  // A re-attach of the same incarnation keeps its verdict: it is reported at most once.
  const sameIncarnation = old !== undefined && old.incarnation === e.incarnation;
  if (old !== undefined) {
    out.replaced = { copyId: old.copyId, incarnation: old.incarnation };
    remove(state, old);
  }
  const w: Watch = {
    copyId: e.copyId,
    incarnation: e.incarnation,
    app: e.app,
    host: e.host,
    address: e.address,
    policy: e.policy,
    attachedAtMs: now,
    lastHeartbeatMs: now,
    health: sameIncarnation ? old.health : undefined,
    breaches: 0,
    firstBreachAtMs: now,
    probes: new Map(),
    nextProbeAtMs: e.policy.probeIntervalMs > 0 ? now + e.policy.probeIntervalMs : Infinity,
    reported: sameIncarnation ? old.reported : undefined,
    lostAtMs: undefined,
    hostReported: false,
    scheduledAt: Infinity,
  };
  state.copies.set(w.copyId, w);
  let ids = state.hosts.get(w.host);
  if (ids === undefined) {
    ids = new Set();
    state.hosts.set(w.host, ids);
  }
  ids.add(w.copyId);
  schedule(state, w);
}

function onHeartbeat(state: DetectorState, e: DetectorEvent & { type: 'Heartbeat' }, now: number, out: StepBuilder): void {
  const w = find(state, e.copyId, e.incarnation, out);
  if (w === undefined) return;
  if (w.lostAtMs !== undefined) {
    out.ignored = `copy ${w.copyId} incarnation ${w.incarnation} was already declared lost`;
    return;
  }
  w.lastHeartbeatMs = Math.max(w.lastHeartbeatMs, now);
  w.health = e.health;
  const breached = breachesOf(w.policy, e.health);
  if (breached.length === 0) {
    w.breaches = 0;
    return;
  }
  if (w.breaches === 0) w.firstBreachAtMs = now;
  w.breaches = Math.min(w.breaches + 1, 1_000_000);
  if (w.reported === undefined && w.breaches >= w.policy.breachSamples) {
    w.reported = 'UNHEALTHY';
    out.reports.push(copyReport(w, 'UNHEALTHY', `${w.breaches} samples in a row over threshold: ${breached.join(', ')}`, now, w.firstBreachAtMs));
  }
}

/** Thresholds `h` crosses under policy `p` (0 = not checked). */
function breachesOf(p: CompiledDetectionPolicy, h: HealthSample): string[] {
  const out: string[] = [];
  if (p.maxEventLoopLagMs > 0 && h.eventLoopLagMs > p.maxEventLoopLagMs) out.push(`event-loop lag ${round(h.eventLoopLagMs)} ms > ${p.maxEventLoopLagMs} ms`);
  if (p.maxCpuPercent > 0 && h.cpuPercent > p.maxCpuPercent) out.push(`cpu ${round(h.cpuPercent)}% > ${p.maxCpuPercent}%`);
  if (p.maxRssBytes > 0 && h.rssBytes > p.maxRssBytes) out.push(`rss ${h.rssBytes} B > ${p.maxRssBytes} B`);
  if (p.maxQueueDepth > 0 && h.queueDepth > p.maxQueueDepth) out.push(`queue depth ${h.queueDepth} > ${p.maxQueueDepth}`);
  return out;
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

function onProbeSent(state: DetectorState, e: DetectorEvent & { type: 'ProbeSent' }, now: number, out: StepBuilder): void {
  const w = find(state, e.copyId, e.incarnation, out);
  if (w === undefined) return;
  if (w.reported !== undefined || w.lostAtMs !== undefined) {
    out.ignored = `copy ${w.copyId} incarnation ${w.incarnation} was already reported`;
    return;
  }
  if (w.probes.size >= state.maxOutstandingProbes) {
    out.ignored = `copy ${w.copyId} already has ${w.probes.size} probes outstanding`;
    return;
  }
  w.probes.set(e.probeId, now);
  schedule(state, w);
}

function onProbeResult(state: DetectorState, e: DetectorEvent & { type: 'ProbeResult' }, now: number, out: StepBuilder): void {
  const w = find(state, e.copyId, e.incarnation, out);
  if (w === undefined) return;
  const sentAt = w.probes.get(e.probeId);
  if (sentAt === undefined) {
    out.ignored = `copy ${w.copyId}: probe ${e.probeId} is not outstanding`;
    return;
  }
  w.probes.delete(e.probeId);
  if (e.ok || w.reported !== undefined || w.lostAtMs !== undefined) return;
  w.reported = 'PROBE_TIMEOUT';
  const why = e.error ? `: ${e.error}` : '';
  out.reports.push(copyReport(w, 'PROBE_TIMEOUT', `probe ${e.probeId} failed after ${now - sentAt} ms${why}`, now, sentAt));
}

function onStreamLost(state: DetectorState, e: DetectorEvent & { type: 'StreamLost' }, now: number, out: StepBuilder): void {
  const w = find(state, e.copyId, e.incarnation, out);
  if (w === undefined) return;
  if (w.lostAtMs !== undefined) return;
  lose(state, w, now, 'CRASH', `heartbeat stream lost: ${e.reason}`, now, out);
}

function onExternalFault(state: DetectorState, e: DetectorEvent & { type: 'ExternalFault' }, now: number, out: StepBuilder): void {
  const w = find(state, e.copyId, e.incarnation, out);
  if (w === undefined) return;
  if (w.lostAtMs !== undefined) return;
  lose(state, w, now, e.kind, e.detail, now, out);
}

/** Mark `w` lost; report it unless already reported; then look for a host fault. */
function lose(state: DetectorState, w: Watch, now: number, kind: 'CRASH' | 'HANG', detail: string, sinceMs: number, out: StepBuilder): void {
  w.lostAtMs = now;
  w.probes.clear();
  if (w.reported === undefined) {
    w.reported = kind;
    out.reports.push(copyReport(w, kind, detail, now, sinceMs));
  }
  const host = hostFault(state, w.host, now);
  if (host) out.reports.push(host);
  schedule(state, w);
}

/** A HOST report when every (recent) copy of `host`, at least 2, is lost and not all were host-reported yet. */
function hostFault(state: DetectorState, host: string, now: number): FaultReport | undefined {
  const ids = state.hosts.get(host);
  if (ids === undefined || ids.size < 2) return undefined;
  const members: Watch[] = [];
  for (const id of ids) {
    const w = state.copies.get(id)!;
    // Lost before the window: forgotten soon (clean-up), not part of this event.
    if (w.lostAtMs !== undefined && now - w.lostAtMs > state.hostFaultWindowMs) continue;
    if (w.lostAtMs === undefined) return undefined;
    members.push(w);
  }
  if (members.length < 2 || members.every((w) => w.hostReported)) return undefined;
  for (const w of members) w.hostReported = true;
  members.sort((a, b) => (a.copyId < b.copyId ? -1 : 1));
  const since = Math.min(...members.map((w) => w.lostAtMs!));
  return {
    kind: 'HOST',
    copies: members.map(identity),
    host,
    detail: `all ${members.length} watched copies of host ${host} lost within ${now - since} ms`,
    atMs: now,
    sinceMs: since,
  };
}

function onPolicyChanged(state: DetectorState, e: DetectorEvent & { type: 'PolicyChanged' }, now: number): void {
  for (const w of state.copies.values()) {
    if (w.app !== e.app) continue;
    const before = w.policy;
    w.policy = e.policy;
    // The copy learns a new interval only with the next settings message: give it a fresh start.
    if (before.heartbeatIntervalMs !== e.policy.heartbeatIntervalMs || before.missedHeartbeats !== e.policy.missedHeartbeats) {
      w.lastHeartbeatMs = Math.max(w.lastHeartbeatMs, now);
    }
    if (before.probeIntervalMs !== e.policy.probeIntervalMs) {
      w.nextProbeAtMs = e.policy.probeIntervalMs > 0 ? now + e.policy.probeIntervalMs : Infinity;
    }
    schedule(state, w);
  }
}

function onSweep(state: DetectorState, now: number, out: StepBuilder): void {
  const heap = state.heap;
  while (heap.length > 0 && heap[0]!.at <= now) {
    const entry = heapPop(heap);
    const w = state.copies.get(entry.copyId);
    if (w === undefined || w.incarnation !== entry.incarnation || w.scheduledAt !== entry.at) continue;
    w.scheduledAt = Infinity;
    if (w.lostAtMs !== undefined) {
      if (now - w.lostAtMs >= state.hostFaultWindowMs) {
        remove(state, w);
        continue;
      }
    } else if (w.reported === undefined) {
      const hangAt = w.lastHeartbeatMs + w.policy.missedHeartbeats * w.policy.heartbeatIntervalMs;
      if (now >= hangAt) {
        const silent = now - w.lastHeartbeatMs;
        lose(state, w, now, 'HANG', `no heartbeat for ${silent} ms (limit ${w.policy.missedHeartbeats} × ${w.policy.heartbeatIntervalMs} ms)`, w.lastHeartbeatMs + w.policy.heartbeatIntervalMs, out);
        continue;
      }
      for (const [id, sentAt] of w.probes) {
        if (now >= sentAt + w.policy.probeTimeoutMs) {
          w.reported = 'PROBE_TIMEOUT';
          w.probes.clear();
          out.reports.push(copyReport(w, 'PROBE_TIMEOUT', `probe ${id} not answered within ${w.policy.probeTimeoutMs} ms`, now, sentAt));
          break;
        }
      }
      if (w.reported === undefined && now >= w.nextProbeAtMs) {
        w.nextProbeAtMs = now + w.policy.probeIntervalMs;
        if (w.probes.size < state.maxOutstandingProbes) {
          out.probesDue.push({ copyId: w.copyId, incarnation: w.incarnation, deadlineMs: w.policy.probeTimeoutMs });
        }
      }
    }
    schedule(state, w);
  }
  // Stale entries pile up when deadlines move earlier; rebuild when they dominate.
  if (heap.length > 2 * state.copies.size + 1024) rebuildHeap(state);
}

function copyReport(w: Watch, kind: FaultReportKind, detail: string, now: number, sinceMs: number): FaultReport {
  return { kind, copies: [identity(w)], host: w.host, detail, atMs: now, sinceMs: Math.min(sinceMs, now) };
}

/** When `w` next needs a look (Infinity: never, until an event). */
function nextDue(state: DetectorState, w: Watch): number {
  if (w.lostAtMs !== undefined) return w.lostAtMs + state.hostFaultWindowMs;
  if (w.reported !== undefined) return Infinity;
  let at = w.lastHeartbeatMs + w.policy.missedHeartbeats * w.policy.heartbeatIntervalMs;
  for (const sentAt of w.probes.values()) at = Math.min(at, sentAt + w.policy.probeTimeoutMs);
  return Math.min(at, w.nextProbeAtMs);
}

/** Make sure `w` has a heap entry no later than its next due time. */
function schedule(state: DetectorState, w: Watch): void {
  const due = nextDue(state, w);
  if (due === Infinity || due >= w.scheduledAt) return;
  w.scheduledAt = due;
  heapPush(state.heap, { at: due, copyId: w.copyId, incarnation: w.incarnation });
}

function remove(state: DetectorState, w: Watch): void {
  state.copies.delete(w.copyId);
  const ids = state.hosts.get(w.host);
  if (ids !== undefined) {
    ids.delete(w.copyId);
    if (ids.size === 0) state.hosts.delete(w.host);
  }
  w.scheduledAt = Infinity;
}

function rebuildHeap(state: DetectorState): void {
  state.heap.length = 0;
  for (const w of state.copies.values()) {
    if (w.scheduledAt !== Infinity) heapPush(state.heap, { at: w.scheduledAt, copyId: w.copyId, incarnation: w.incarnation });
  }
}

function heapPush(h: HeapEntry[], e: HeapEntry): void {
  h.push(e);
  let i = h.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p]!.at <= h[i]!.at) break;
    [h[p], h[i]] = [h[i]!, h[p]!];
    i = p;
  }
}

function heapPop(h: HeapEntry[]): HeapEntry {
  const top = h[0]!;
  const last = h.pop()!;
  if (h.length > 0) {
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.at < h[m]!.at) m = l;
      if (r < h.length && h[r]!.at < h[m]!.at) m = r;
      if (m === i) break;
      [h[m], h[i]] = [h[i]!, h[m]!];
      i = m;
    }
  }
  return top;
}
