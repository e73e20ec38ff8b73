/**
 * Key → RS mapping as an application declares it (R-ALDM): hash (the default) or ordered key
 * ranges. Pure and allocation-free on the lookup path; shared by ALDM, the router, the
 * routing client and applications so that every component maps a key to the same RS.
 */
import { keyToRs } from './hash';

/** How an application maps keys to resource sets. */
export type PartitioningName = 'HASH' | 'RANGE';

/** Partitioning names in declaration order. */
export const PARTITIONINGS: readonly PartitioningName[] = ['HASH', 'RANGE'];

/** Longest range start accepted, in UTF-16 code units. */
export const MAX_RANGE_START_LENGTH = 1024;

/**
 * What {@link rsOfKey} needs of an application: its RS count and partitioning.
 *
 * With `RANGE`, `rangeStarts` holds `rsCount - 1` split keys, strictly increasing in
 * {@link compareKeys} order: RS 0 takes keys `< rangeStarts[0]`, RS i takes
 * `rangeStarts[i-1] <= key < rangeStarts[i]`, the last RS takes `key >= rangeStarts[rsCount-2]`.
 */
export interface KeyPartition {
  /** Absent: `HASH`. */
  readonly partitioning?: PartitioningName;
  /** Number of RS (ids 0..rsCount-1). */
  readonly rsCount: number;
  /** RANGE only: the split keys (see above). Absent or empty for HASH. */
  readonly rangeStarts?: readonly string[];
}

/**
 * Code point at `i` of `s` and its length in code units (1 or 2); a lone surrogate reads as
 * U+FFFD, exactly as UTF-8 encoding (and {@link keyToRs}) treats it.
 */
function codePointAt(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff) {
    const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
    if (next >= 0xdc00 && next <= 0xdfff) return 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
    return 0xfffd;
  }
  if (c >= 0xdc00 && c <= 0xdfff) return 0xfffd;
  return c;
}

/**
 * Orders keys by Unicode code point, which is the byte-wise order of their UTF-8 encodings (so
 * any implementation that compares the UTF-8 bytes agrees). A lone surrogate counts as U+FFFD.
 * Differs from JavaScript's `<` (UTF-16 code units) only for characters above U+FFFF against
 * U+E000..U+FFFF. Returns a negative number, 0 or a positive number.
 */
export function compareKeys(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(j);
    // Fast path: code units below the surrogate range are whole code points.
    if (ca < 0xd800 && cb < 0xd800) {
      if (ca !== cb) return ca - cb;
      i++;
      j++;
      continue;
    }
    const pa = codePointAt(a, i);
    const pb = codePointAt(b, j);
    if (pa !== pb) return pa - pb;
    i += pa >= 0x10000 ? 2 : 1;
    j += pb >= 0x10000 ? 2 : 1;
  }
  // One is a prefix of the other: the shorter sorts first.
  return i < a.length ? 1 : j < b.length ? -1 : 0;
}

/**
 * The RS of `key` under `p`: {@link keyToRs} for HASH, a binary search over `rangeStarts` for
 * RANGE. Assumes `p` is valid (see {@link validatePartitioning}).
 *
 * @throws RangeError when `rsCount` is not an integer ≥ 1, or a RANGE partition does not hold
 * `rsCount - 1` starts (programming errors: specs are validated when declared).
 */
export function rsOfKey(p: KeyPartition, key: string): number {
  if (p.partitioning !== 'RANGE') return keyToRs(key, p.rsCount);
  const starts = p.rangeStarts ?? [];
  if (!Number.isInteger(p.rsCount) || p.rsCount < 1) throw new RangeError(`rsCount must be an integer >= 1, got ${p.rsCount}`);
  if (starts.length !== p.rsCount - 1) throw new RangeError(`RANGE partitioning needs rsCount - 1 = ${p.rsCount - 1} range starts, got ${starts.length}`);
  // The RS is the number of starts <= key: find the first start > key.
  let lo = 0;
  let hi = starts.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(starts[mid]!, key) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** True when `s` holds no lone UTF-16 surrogate (it encodes to UTF-8 without loss). */
function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (next < 0xdc00 || next > 0xdfff) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
  }
  return true;
}

/**
 * Checks an application's partitioning: HASH (or absent) must have no range starts; RANGE needs
 * exactly `rsCount - 1` starts, each a non-empty well-formed string of at most
 * {@link MAX_RANGE_START_LENGTH} code units, strictly increasing in {@link compareKeys} order.
 * `rsCount` is assumed valid. Returns the problem or `null`; it starts with the field path
 * (`where` + `.partitioning` / `.rangeStarts[i]`), then ` (label)` when a label is given.
 */
export function validatePartitioning(
  p: { readonly partitioning?: unknown; readonly rsCount: number; readonly rangeStarts?: unknown },
  where: string,
  label?: string,
): string | null {
  const at = (field: string): string => `${where}.${field}${label === undefined ? '' : ` (${label})`}`;
  const kind = p.partitioning ?? 'HASH';
  if (!PARTITIONINGS.includes(kind as PartitioningName)) {
    return `${at('partitioning')}: ${JSON.stringify(kind)} is not one of ${PARTITIONINGS.join(', ')}`;
  }
  const starts = p.rangeStarts ?? [];
  if (!Array.isArray(starts)) return `${at('rangeStarts')}: must be a list of strings`;
  if (kind === 'HASH') {
    return starts.length === 0 ? null : `${at('rangeStarts')}: HASH partitioning takes no range starts (got ${starts.length}); use RANGE or drop them`;
  }
  if (starts.length !== p.rsCount - 1) {
    return `${at('rangeStarts')}: RANGE partitioning with rsCount ${p.rsCount} needs exactly ${p.rsCount - 1} range starts (RS 0 takes the keys below the first), got ${starts.length}`;
  }
  for (let i = 0; i < starts.length; i++) {
    const s: unknown = starts[i];
    const f = at(`rangeStarts[${i}]`);
    if (typeof s !== 'string') return `${f}: must be a string`;
    if (s === '') return `${f}: must not be empty (no key sorts below the empty string)`;
    if (s.length > MAX_RANGE_START_LENGTH) return `${f}: longer than ${MAX_RANGE_START_LENGTH} characters`;
    if (!isWellFormed(s)) return `${f}: contains a lone UTF-16 surrogate`;
    if (i > 0 && compareKeys(starts[i - 1] as string, s) >= 0) {
      return `${f}: ${JSON.stringify(s)} must sort strictly after ${JSON.stringify(starts[i - 1])} (sorted by code point, no duplicates)`;
    }
  }
  return null;
}
