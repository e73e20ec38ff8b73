/**
 * Topology files: the YAML or JSON an operator hands to `understudy apply -f FILE`.
 *
 * ```yaml
 * apps:
 *   - { name: collector, mode: DISTRIBUTED, rsCount: 8, minCopies: 2 }
 *   - { name: aggregator, mode: DISTRIBUTED_FAULT_TOLERANT, rsCount: 16, standbys: 1, minCopies: 3 }
 *   - { name: ledger, mode: DISTRIBUTED, rsCount: 3, partitioning: range, rangeStarts: [g, p] }
 *   - { name: enhancer, mode: DISTRIBUTED_FAULT_TOLERANT, rsCount: 8, standbys: 1, sharedMasterRs: 0 }
 * edges:
 *   - { from: collector, to: aggregator, keyField: subscriber }
 * ```
 *
 * Only the SHAPE is checked here (types, ranges, unknown keys, duplicate app names), with
 * messages that name the file and the field; what the topology means (does an edge name a
 * declared app, may a mode change …) is the controller's call.
 */
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Mode, Partitioning, modeFromName, modeName, type AppSpec, type DetectionPolicy, type Edge, type Topology } from '@understudy/proto';
import { validatePartitioning } from '@understudy/core';
import { parseDocument } from 'yaml';
import { UsageError } from './errors';

/** Keys allowed in one `apps[]` entry. */
export const APP_KEYS = ['name', 'mode', 'rsCount', 'standbys', 'minCopies', 'partitioning', 'rangeStarts', 'detection', 'sharedMasterRs'] as const;
/**
 * Partitioning names accepted in a file (case-insensitive; a `PARTITIONING_` prefix is accepted
 * too). Absent: hash. `range` needs `rangeStarts`: rsCount - 1 split keys, strictly increasing by
 * code point; RS 0 takes the keys below the first, RS i the keys from start i-1 up to start i.
 */
export const PARTITIONING_NAMES = ['hash', 'range'] as const;
/** Keys allowed in an app's `detection` mapping (numbers; ranges are the controller's call). */
export const DETECTION_KEYS = [
  'heartbeatIntervalMs',
  'missedHeartbeats',
  'maxEventLoopLagMs',
  'maxCpuPercent',
  'maxRssBytes',
  'maxQueueDepth',
  'breachSamples',
  'probeIntervalMs',
  'probeTimeoutMs',
] as const;
/** Keys allowed in one `edges[]` entry. */
export const EDGE_KEYS = ['from', 'to', 'keyField'] as const;
/** Keys allowed at the top level. */
export const TOP_KEYS = ['apps', 'edges'] as const;
/** Mode names accepted in a file (case-insensitive; a `MODE_` prefix is accepted too). */
export const MODE_NAMES = ['DISTRIBUTED', 'FAULT_TOLERANT', 'DISTRIBUTED_FAULT_TOLERANT'] as const;

const UINT32_MAX = 0xffff_ffff;

/**
 * A topology file that cannot be read or does not have the expected shape. Maps to exit
 * code 2 / INVALID_ARGUMENT. `problems` lists every problem found, each naming its field.
 */
export class TopologyFileError extends UsageError {
  /** The file as given on the command line. */
  readonly file: string;
  /** One line per problem, e.g. `apps[1] (counter).rsCount: expected an integer >= 1, got 0`. */
  readonly problems: readonly string[];

  constructor(file: string, problems: readonly string[]) {
    super(
      problems.length === 1
        ? `bad topology file ${file}: ${problems[0]}`
        : `bad topology file ${file} (${problems.length} problems):\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
    this.name = 'TopologyFileError';
    this.file = file;
    this.problems = problems;
  }
}

/** Format of a topology file. */
export type TopologyFormat = 'yaml' | 'json';

/** `.json` files are JSON; everything else (`.yaml`, `.yml`, no extension) is YAML. */
export function formatOf(file: string): TopologyFormat {
  return path.extname(file).toLowerCase() === '.json' ? 'json' : 'yaml';
}

/** Read and parse a topology file; rejects with {@link TopologyFileError} naming the problem. */
export async function loadTopologyFile(file: string): Promise<Topology> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (e as Error).message;
    throw new TopologyFileError(file, [`cannot read the file: ${why}`]);
  }
  return parseTopologyText(text, file, formatOf(file));
}

/**
 * Parse topology text (YAML or JSON) into the wire `Topology`. `file` is only used in
 * messages. Throws {@link TopologyFileError} listing every problem found.
 */
export function parseTopologyText(text: string, file: string, format: TopologyFormat = formatOf(file)): Topology {
  if (text.trim() === '') throw new TopologyFileError(file, ["the file is empty; expected a mapping with an 'apps' list"]);
  let data: unknown;
  if (format === 'json') {
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new TopologyFileError(file, [`not valid JSON: ${(e as Error).message}`]);
    }
  } else {
    // uniqueKeys (the default) makes a repeated key an error instead of last-one-wins.
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) {
      throw new TopologyFileError(
        file,
        doc.errors.map((err) => `not valid YAML: ${err.message.split('\n')[0]}`),
      );
    }
    data = doc.toJS({ maxAliasCount: 100 });
  }
  return topologyFromData(data, file);
}

/** Validate already-parsed data (from YAML or JSON) and build the wire `Topology`. */
export function topologyFromData(data: unknown, file: string): Topology {
  const problems: string[] = [];
  if (!isRecord(data)) {
    throw new TopologyFileError(file, [`expected a mapping with an 'apps' list at the top level, got ${describe(data)}`]);
  }
  checkKeys(data, TOP_KEYS, 'top level', problems);

  const apps: AppSpec[] = [];
  if (!('apps' in data)) problems.push("apps: missing (a list of applications: name, mode, rsCount, standbys, minCopies)");
  else if (!Array.isArray(data.apps)) problems.push(`apps: expected a list, got ${describe(data.apps)}`);
  else {
    const seen = new Map<string, number>();
    data.apps.forEach((raw, i) => {
      const app = appFromData(raw, i, problems);
      if (!app) return;
      const first = seen.get(app.name);
      if (first !== undefined) problems.push(`apps[${i}].name: duplicate application name '${app.name}' (also apps[${first}])`);
      else seen.set(app.name, i);
      apps.push(app);
    });
  }

  const edges: Edge[] = [];
  if ('edges' in data && data.edges !== null && data.edges !== undefined) {
    if (!Array.isArray(data.edges)) problems.push(`edges: expected a list, got ${describe(data.edges)}`);
    else
      data.edges.forEach((raw, i) => {
        const e = edgeFromData(raw, i, problems);
        if (e) edges.push(e);
      });
  }

  if (problems.length > 0) throw new TopologyFileError(file, problems);
  return { apps, edges };
}

function appFromData(raw: unknown, i: number, problems: string[]): AppSpec | undefined {
  const where = `apps[${i}]`;
  if (!isRecord(raw)) {
    problems.push(`${where}: expected a mapping (name, mode, rsCount, standbys, minCopies), got ${describe(raw)}`);
    return undefined;
  }
  const label = typeof raw.name === 'string' && raw.name !== '' ? `${where} (${raw.name})` : where;
  const before = problems.length;
  checkKeys(raw, APP_KEYS, label, problems);
  const name = requiredString(raw, 'name', where, problems);
  let mode: Mode = Mode.MODE_UNSPECIFIED;
  if (!('mode' in raw) || raw.mode === null) problems.push(`${label}.mode: missing (one of ${MODE_NAMES.join(', ')})`);
  else if (typeof raw.mode !== 'string') problems.push(`${label}.mode: expected one of ${MODE_NAMES.join(', ')}, got ${describe(raw.mode)}`);
  else {
    const m = modeName(raw.mode.trim());
    if (!m) problems.push(`${label}.mode: unknown mode '${raw.mode}'; expected one of ${MODE_NAMES.join(', ')}`);
    else mode = modeFromName(m);
  }
  const rsCount = integer(raw, 'rsCount', label, { min: 1, required: true }, problems);
  const standbys = integer(raw, 'standbys', label, { min: 0, required: false }, problems) ?? 0;
  const minCopies = integer(raw, 'minCopies', label, { min: 1, required: false }, problems) ?? 1;
  const detection = detectionFromData(raw.detection, label, problems);
  const partitioning = partitioningFromData(raw, label, rsCount, problems);
  // Shared data: the master RS every copy follows (absent: none). Its range is the controller's call.
  const sharedMasterRs = integer(raw, 'sharedMasterRs', label, { min: 0, required: false }, problems);
  if (problems.length > before || name === undefined || rsCount === undefined || partitioning === undefined) return undefined;
  const app: AppSpec = { name, mode, rsCount, standbys, minCopies, partitioning: partitioning.partitioning, detection, rangeStarts: partitioning.rangeStarts };
  return sharedMasterRs === undefined ? app : { ...app, sharedMasterRs };
}

/** `partitioning` (hash | range) and `rangeStarts` of one app; undefined after a problem. */
function partitioningFromData(
  raw: Record<string, unknown>,
  label: string,
  rsCount: number | undefined,
  problems: string[],
): { partitioning: Partitioning; rangeStarts: string[] } | undefined {
  let kind: 'HASH' | 'RANGE' = 'HASH';
  const p = raw.partitioning;
  if (p !== undefined && p !== null) {
    const norm = typeof p === 'string' ? p.trim().toUpperCase().replace(/^PARTITIONING_/, '') : undefined;
    if (norm !== 'HASH' && norm !== 'RANGE') {
      problems.push(`${label}.partitioning: expected one of ${PARTITIONING_NAMES.join(', ')}, got ${describe(p)}`);
      return undefined;
    }
    kind = norm;
  }
  const rs = raw.rangeStarts;
  let rangeStarts: string[] = [];
  if (rs !== undefined && rs !== null) {
    if (!Array.isArray(rs)) {
      problems.push(`${label}.rangeStarts: expected a list of strings, got ${describe(rs)}`);
      return undefined;
    }
    const bad = rs.findIndex((v) => typeof v !== 'string');
    if (bad >= 0) {
      // YAML reads `[10, 20]` as numbers: say so, since the keys are compared as strings.
      problems.push(`${label}.rangeStarts[${bad}]: expected a string (quote numbers: '10'), got ${describe(rs[bad])}`);
      return undefined;
    }
    rangeStarts = rs as string[];
  }
  if (rsCount === undefined) return undefined;
  const problem = validatePartitioning({ partitioning: kind, rsCount, rangeStarts }, label);
  if (problem !== null) {
    problems.push(problem);
    return undefined;
  }
  return { partitioning: kind === 'RANGE' ? Partitioning.PARTITIONING_RANGE : Partitioning.PARTITIONING_HASH, rangeStarts };
}

function detectionFromData(raw: unknown, label: string, problems: string[]): DetectionPolicy | undefined {
  if (raw === undefined || raw === null) return undefined;
  const where = `${label}.detection`;
  if (!isRecord(raw)) {
    problems.push(`${where}: expected a mapping (${DETECTION_KEYS.join(', ')}), got ${describe(raw)}`);
    return undefined;
  }
  checkKeys(raw, DETECTION_KEYS, where, problems);
  const out: Record<string, number> = {};
  for (const k of DETECTION_KEYS) {
    const v = raw[k];
    if (v === undefined || v === null) out[k] = 0;
    else if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) problems.push(`${where}.${k}: expected a number >= 0, got ${describe(v)}`);
    else out[k] = v;
  }
  return out as unknown as DetectionPolicy;
}

function edgeFromData(raw: unknown, i: number, problems: string[]): Edge | undefined {
  const where = `edges[${i}]`;
  if (!isRecord(raw)) {
    problems.push(`${where}: expected a mapping (from, to, keyField), got ${describe(raw)}`);
    return undefined;
  }
  const before = problems.length;
  checkKeys(raw, EDGE_KEYS, where, problems);
  const from = requiredString(raw, 'from', where, problems);
  const to = requiredString(raw, 'to', where, problems);
  const keyField = requiredString(raw, 'keyField', where, problems);
  if (problems.length > before || from === undefined || to === undefined || keyField === undefined) return undefined;
  return { from, to, keyField };
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string, problems: string[]): void {
  for (const key of Object.keys(obj)) {
    if (allowed.includes(key)) continue;
    const hint = suggest(key, allowed);
    problems.push(`${where}: unknown key '${key}'${hint ? ` (did you mean '${hint}'?)` : ''}; allowed: ${allowed.join(', ')}`);
  }
}

/** `rs_count` / `RSCOUNT` / `rscount` → `rsCount`. */
function suggest(key: string, allowed: readonly string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/[_\-\s]/g, '');
  return allowed.find((a) => norm(a) === norm(key));
}

function requiredString(obj: Record<string, unknown>, key: string, where: string, problems: string[]): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) {
    problems.push(`${where}.${key}: missing (a non-empty string)`);
    return undefined;
  }
  if (typeof v !== 'string') {
    problems.push(`${where}.${key}: expected a string, got ${describe(v)}`);
    return undefined;
  }
  if (v.trim() === '') {
    problems.push(`${where}.${key}: must not be empty`);
    return undefined;
  }
  return v;
}

function integer(
  obj: Record<string, unknown>,
  key: string,
  where: string,
  o: { min: number; required: boolean },
  problems: string[],
): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (o.required) problems.push(`${where}.${key}: missing (an integer >= ${o.min})`);
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < o.min || v > UINT32_MAX) {
    problems.push(`${where}.${key}: expected an integer >= ${o.min}, got ${describe(v)}`);
    return undefined;
  }
  return v;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Short description of a value for messages: `0`, `"4"` (a string), `a list`, `nothing`. */
function describe(v: unknown): string {
  if (v === undefined || v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v instanceof Date) return `a date (${v.toISOString()})`;
  return 'a mapping';
}
