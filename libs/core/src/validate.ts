/** Input validation of declared topologies (R-NF-4: bad input gets a precise error). */
import type { Mode, Topology } from './model';
import type { Rejection } from './events';
import { validateDetectionPolicy } from './detection';
import { validatePartitioning } from './partition';

/** Application names: lower-case identifier, 1–63 characters. */
export const APP_NAME_RE = /^[a-z][a-z0-9_-]{0,62}$/;
/** Upper bound of `rsCount`. */
export const MAX_RS_COUNT = 1_000_000;
/** Upper bound of `standbys` for FAULT_TOLERANT and DISTRIBUTED_FAULT_TOLERANT apps. */
export const MAX_STANDBYS = 16;

const MODES: readonly Mode[] = ['DISTRIBUTED', 'FAULT_TOLERANT', 'DISTRIBUTED_FAULT_TOLERANT'];

function invalid(message: string): Rejection {
  return { code: 'INVALID_ARGUMENT', message };
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/**
 * Checks a topology on its own: app names, modes, counts, and edges. Edges may reference apps of
 * the topology or, when given, `existingApps` (apps already declared: ApplyTopology upserts).
 * Returns the first problem found (with the field path and app name) or `null`.
 */
export function validateTopology(t: Topology, existingApps: Iterable<string> = []): Rejection | null {
  if (t === null || typeof t !== 'object') return invalid('topology: must be an object with apps and edges');
  if (!Array.isArray(t.apps)) return invalid('topology.apps: must be a list');
  if (!Array.isArray(t.edges)) return invalid('topology.edges: must be a list');
  const names = new Set<string>();
  for (let i = 0; i < t.apps.length; i++) {
    const a = t.apps[i];
    const at = `apps[${i}]`;
    if (a === null || typeof a !== 'object') return invalid(`${at}: must be an object`);
    if (typeof a.name !== 'string' || !APP_NAME_RE.test(a.name)) {
      return invalid(`${at}.name: ${JSON.stringify(a.name)} is not a valid app name (lower-case letter, then up to 62 of [a-z0-9_-])`);
    }
    const app = `app "${a.name}"`;
    if (names.has(a.name)) return invalid(`${at}.name: ${app} is declared twice`);
    names.add(a.name);
    if (!MODES.includes(a.mode)) return invalid(`${at}.mode: ${app} has mode ${JSON.stringify(a.mode)}; expected one of ${MODES.join(', ')}`);
    if (!isInt(a.rsCount) || a.rsCount < 1 || a.rsCount > MAX_RS_COUNT) {
      return invalid(`${at}.rsCount: ${app} has rsCount ${String(a.rsCount)}; must be an integer in 1..${MAX_RS_COUNT}`);
    }
    if (!isInt(a.standbys)) return invalid(`${at}.standbys: ${app} has standbys ${String(a.standbys)}; must be an integer`);
    if (a.mode === 'DISTRIBUTED' && a.standbys !== 0) {
      return invalid(`${at}.standbys: ${app} is DISTRIBUTED and must have standbys 0 (got ${a.standbys})`);
    }
    if (a.mode !== 'DISTRIBUTED' && (a.standbys < 1 || a.standbys > MAX_STANDBYS)) {
      return invalid(`${at}.standbys: ${app} is ${a.mode} and needs standbys in 1..${MAX_STANDBYS} (got ${a.standbys})`);
    }
    if (!isInt(a.minCopies) || a.minCopies < 1) {
      return invalid(`${at}.minCopies: ${app} has minCopies ${String(a.minCopies)}; must be an integer >= 1`);
    }
    const bad = validateDetectionPolicy(a.detection, `${at}.detection (${app})`);
    if (bad !== null) return bad;
    const badPartitioning = validatePartitioning(a, at, app);
    if (badPartitioning !== null) return invalid(badPartitioning);
    if (a.sharedMasterRs !== undefined && (!isInt(a.sharedMasterRs) || a.sharedMasterRs < 0 || a.sharedMasterRs >= a.rsCount)) {
      return invalid(`${at}.sharedMasterRs: ${app} has sharedMasterRs ${String(a.sharedMasterRs)}; must be an RS id in 0..${a.rsCount - 1} (or absent: no shared data)`);
    }
  }
  const known = new Set(names);
  for (const n of existingApps) known.add(n);
  const pairs = new Set<string>();
  for (let i = 0; i < t.edges.length; i++) {
    const e = t.edges[i];
    const at = `edges[${i}]`;
    if (e === null || typeof e !== 'object') return invalid(`${at}: must be an object`);
    for (const f of ['from', 'to'] as const) {
      const v = e[f];
      if (typeof v !== 'string' || !known.has(v)) {
        return invalid(`${at}.${f}: app ${JSON.stringify(v)} is not declared (in this topology or already applied)`);
      }
    }
    if (typeof e.keyField !== 'string' || e.keyField.trim() === '') {
      return invalid(`${at}.keyField: edge ${e.from} -> ${e.to} needs a non-empty keyField`);
    }
    if (e.keyField.length > MAX_KEY_FIELD_LENGTH) {
      return invalid(`${at}.keyField: edge ${e.from} -> ${e.to} has a keyField of ${e.keyField.length} characters; at most ${MAX_KEY_FIELD_LENGTH}`);
    }
    if (e.from === e.to) return invalid(`${at}: edge ${e.from} -> ${e.to} points at its own app; the data-flow map is a directed acyclic graph`);
    const key = `${e.from}\u0000${e.to}`;
    if (pairs.has(key)) return invalid(`${at}: duplicate edge ${e.from} -> ${e.to} (one edge per pair of apps)`);
    pairs.add(key);
  }
  const cycle = findCycle(t.edges);
  if (cycle !== null) return invalid(`edges: the data-flow map has a cycle ${cycle.join(' -> ')}; it must be a directed acyclic graph`);
  return null;
}

/** Longest `keyField` of an edge, in UTF-16 code units. */
export const MAX_KEY_FIELD_LENGTH = 256;

/**
 * A cycle of the edge graph as its app names (first = last), or null. Cycles are refused because
 * a copy whose outbox is full stops taking input (back-pressure): around a cycle, full outboxes
 * would wait on each other for ever.
 */
function findCycle(edges: readonly { readonly from: string; readonly to: string }[]): string[] | null {
  const out = new Map<string, string[]>();
  for (const e of edges) {
    const l = out.get(e.from);
    if (l) l.push(e.to);
    else out.set(e.from, [e.to]);
  }
  // Iterative DFS (no recursion limit on long chains): 1 = on the current path, 2 = done.
  const mark = new Map<string, 1 | 2>();
  for (const start of out.keys()) {
    if (mark.has(start)) continue;
    const path: string[] = [start];
    const next: number[] = [0];
    mark.set(start, 1);
    while (path.length > 0) {
      const at = path[path.length - 1]!;
      const succ = out.get(at) ?? [];
      const i = next[next.length - 1]!;
      if (i >= succ.length) {
        mark.set(at, 2);
        path.pop();
        next.pop();
        continue;
      }
      next[next.length - 1] = i + 1;
      const to = succ[i]!;
      const m = mark.get(to);
      if (m === 1) return [...path.slice(path.indexOf(to)), to];
      if (m === undefined) {
        mark.set(to, 1);
        path.push(to);
        next.push(0);
      }
    }
  }
  return null;
}
