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
    const key = `${e.from}\u0000${e.to}`;
    if (pairs.has(key)) return invalid(`${at}: duplicate edge ${e.from} -> ${e.to} (one edge per pair of apps)`);
    pairs.add(key);
  }
  return null;
}
