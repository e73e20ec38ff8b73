/** Small helpers the benchmarks share (percentiles, rounding, one key per RS, /proc readings). */
import * as fs from 'node:fs';
import { keyToRs } from '@understudy/core';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on Linux). */
const USER_HZ = 100;

/** CPU seconds (user + system) used so far by the processes together, from /proc (Linux); a process that is gone counts 0. */
export function cpuSeconds(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      // The command name may hold spaces: fields start after its closing parenthesis.
      const parts = f.slice(f.lastIndexOf(')') + 2).split(' ');
      total += (Number(parts[11]) + Number(parts[12])) / USER_HZ;
    } catch {
      /* not Linux, or gone */
    }
  }
  return total;
}

/** Cumulative CPU time of the whole machine (all cores) from /proc/stat: busy and total clock ticks. */
export interface MachineTicks {
  readonly busy: number;
  readonly total: number;
}

/** The machine's CPU ticks so far (Linux); zeros elsewhere. Busy = everything but idle and iowait. */
export function machineTicks(): MachineTicks {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3]! - f[4]!, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** Percent of the whole machine (all cores) busy between two readings; NaN when unknown. */
export function machineBusyPct(from: MachineTicks, to: MachineTicks): number {
  const total = to.total - from.total;
  return total > 0 ? Math.round((100 * (to.busy - from.busy)) / total) : NaN;
}

/** Resident set size of a process in MB, from /proc (Linux); NaN when unknown. */
export function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** The p-th percentile (nearest rank) of `xs`; NaN when empty. */
export function pct(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/** Rounded to 1 decimal. */
export const r1 = (x: number): number => Math.round(x * 10) / 10;
/** Rounded to 2 decimals. */
export const r2 = (x: number): number => Math.round(x * 100) / 100;

/** One key per RS of a hash-partitioned app with `rsCount` RS (`${prefix}${i}`), so every RS gets load. */
export function keysPerRs(rsCount: number, prefix: string): string[] {
  const out: string[] = new Array(rsCount);
  let found = 0;
  for (let i = 0; found < rsCount; i++) {
    const k = `${prefix}${i}`;
    const rs = keyToRs(k, rsCount);
    if (out[rs] === undefined) {
      out[rs] = k;
      found++;
    }
  }
  return out;
}

/**
 * How the bench's services and copies ran: `built` (bundles from dist/, what a deployment runs;
 * `npm run bench` default) or `tsx` (from source, `UNDERSTUDY_RUN_BUILT=0`). Goes into the JSON.
 */
export const PROCESSES: 'built' | 'tsx' = process.env.UNDERSTUDY_RUN_BUILT === '1' ? 'built' : 'tsx';
