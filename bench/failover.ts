/**
 * Failover benchmark (issue 3), real processes on 127.0.0.1: a controller (embedded store), two
 * fault managers and three counter copies (DISTRIBUTED_FAULT_TOLERANT, 1 active + 1 standby per
 * RS, 100 ms heartbeats, hang = 3 missed). One load worker per RS sends increments back to back
 * (closed loop; RATE_PER_RS paces it). The faults start once WARM_ACKS increments were
 * acknowledged (default: enough to fill every RS's dedupe table, as in a cluster that has run a
 * while). `machine_busy_pct`: the whole machine's CPU over the fault runs; closed loop keeps this
 * 2-core box ~95% busy, which sets the tail.
 *
 * Each run picks the copy with the most actives and either kills it (`kill -9`, CRASH_RUNS runs,
 * default 50) or stops it (`SIGSTOP`, HANG_RUNS runs, default 20), then measures
 *   fault → first increment acknowledged by a NEW active of one of the victim's RS
 * (client-observed, the figure an application sees). `all_ms` figures: until every one of the
 * victim's RS has acknowledged on its new active. Between runs (untimed) the victim restarts,
 * rejoins as standby and gets actives back by balancing.
 * At the end: counter values vs. acknowledged increments → `lost` and `doubled` (must be 0).
 * Progress lines go to stdout, one per run with the services' own times since the fault
 * (`detected`, `report answered`, see `phases`); the last line is one JSON object.
 */
import { performance } from 'node:perf_hooks';
import { CopyStatus, Role } from '@understudy/proto';
import { keysPerRs, machineBusyPct, machineTicks, pct, PROCESSES, r1 } from './lib';
import { startCounterCluster, type CounterCluster } from '../test/harness/cluster';
import type { Proc } from '../test/harness/processes';
import { waitFor } from '../test/harness/wait';

const RS = 8;
const CRASH_RUNS = Number(process.env.CRASH_RUNS ?? 50);
const HANG_RUNS = Number(process.env.HANG_RUNS ?? 20);
const HEARTBEAT_MS = 100;
const MISSED = 3;
/**
 * Message ids each RS remembers for dedupe (the copies' `--dedupe-window`, default 10,000). Every
 * snapshot carries the table, and a failover's first acknowledgement waits for the new standby's
 * snapshot. A killed copy held 3 actives and 2–3 standbys here, so the two survivors send 5–6
 * snapshots, each ~700 KB with a full table. Two things keep that off the first
 * acknowledgements: a copy sends its snapshots to one peer through a byte gate (one large one at
 * a time, so the first is not slowed down by the rest: SNAPSHOT_BYTES_IN_FLIGHT), and with
 * SNAPSHOT_SPLIT only the newest 64 KiB of ids go with the state, the rest after
 * (SNAPSHOT_SPLIT_DEDUPE_BYTES, 0 = whole tables). Measured (built processes, 50 kills per run,
 * alternating runs): gate on/off crash p50 26.6/35.6 ms, p99 52.6/63.3 (means of 4 pairs); split
 * on/off with the gate p50 28.6/30.3, p99 55.9/61.9, all-RS p99 65.0/81.9 (means of 7 pairs, one
 * split run with a 188 ms outlier left out of the means: a promotion dropped by a full SetRoles
 * queue, fixed since, see RoleSendQueue in the controller).
 */
const DEDUPE_WINDOW = process.env.DEDUPE_WINDOW;
/** The copies' `--snapshot-bytes-in-flight` (default 256 KiB: full-table snapshots to one peer go one at a time). */
const SNAPSHOT_BYTES_IN_FLIGHT = process.env.SNAPSHOT_BYTES_IN_FLIGHT;
/** The copies' `--snapshot-split-dedupe-bytes` (default 64 KiB; 0: whole tables in snapshots). */
const SNAPSHOT_SPLIT_DEDUPE_BYTES = process.env.SNAPSHOT_SPLIT_DEDUPE_BYTES;
/**
 * Increments per second per RS after the warm-up; 0 = closed loop (each worker sends the next as
 * soon as the last is acknowledged). A paced load measures the first acknowledgement only as
 * finely as its interval: the first request after the new active is ready goes when it is due.
 */
const RATE_PER_RS = Number(process.env.RATE_PER_RS ?? 0);
/**
 * Acknowledged increments before the first fault, closed loop. Default: the dedupe window times
 * the RS count, so every RS's table is full as in a cluster that has run for a while (a
 * failover's snapshots then carry full tables, not the near-empty ones of a fresh cluster).
 */
const WARM_ACKS = Number(process.env.WARM_ACKS ?? Number(DEDUPE_WINDOW ?? 10_000) * RS);

interface Ack {
  t: number;
  rs: number;
  copyId: string;
}



class Load {
  readonly acked = new Map<string, number>();
  /** Recent acks; the oldest are dropped in halves (bounded), counted in `dropped`. */
  readonly acks: Ack[] = [];
  /** Acks dropped from the front of `acks` so far: absolute position = dropped + index. */
  dropped = 0;
  failures = 0;
  private running = true;
  /** Sends at RATE_PER_RS once set (after the warm-up); closed loop before. */
  paced = false;
  private readonly loops: Promise<void>[];
  constructor(
    private readonly cl: CounterCluster,
    readonly keys: string[],
  ) {
    this.loops = keys.map((k, rs) => this.loop(k, rs));
  }
  private async loop(key: string, rs: number): Promise<void> {
    let next = performance.now();
    while (this.running) {
      if (RATE_PER_RS > 0 && this.paced) {
        // Paced: one send per interval; a late loop starts over from now (no catch-up bursts).
        next = Math.max(next + 1000 / RATE_PER_RS, performance.now());
        const wait = next - performance.now();
        if (wait > 0.5) await new Promise((r) => setTimeout(r, wait));
      }
      try {
        const d = await this.cl.routing.deliver('counter', key, { key, by: 1 }, { deadlineMs: 30_000 });
        this.acked.set(key, (this.acked.get(key) ?? 0) + 1);
        this.acks.push({ t: performance.now(), rs, copyId: d.copyId });
        if (this.acks.length > 100_000) {
          this.acks.splice(0, 50_000);
          this.dropped += 50_000;
        }
      } catch {
        this.failures++;
      }
    }
  }
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

async function activesOf(cl: CounterCluster): Promise<{ victim: string; rs: number[] }> {
  const s = await cl.status(true);
  const up = s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).sort((a, b) => b.activeCount - a.activeCount);
  const victim = up[0]!.copyId;
  const rs = s.assignments.filter((a) => a.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId === victim).map((a) => a.rs);
  return { victim, rs };
}

/** Waits until acks from new actives arrived for the victim's RS; returns first/all latencies. */
async function measure(load: Load, t0: number, victim: string, rs: number[]): Promise<{ first: number; all: number }> {
  const want = new Set(rs);
  const seen = new Map<number, number>();
  // An absolute position: a plain index would point past the end after the load drops old acks
  // (that made runs look stalled for up to 30 s, and some 'all' figures ~1 s too long).
  let scanned = load.dropped;
  await waitFor(
    () => {
      if (scanned < load.dropped) scanned = load.dropped;
      for (; scanned - load.dropped < load.acks.length; scanned++) {
        const a = load.acks[scanned - load.dropped]!;
        if (a.t >= t0 && want.has(a.rs) && a.copyId !== victim && !seen.has(a.rs)) seen.set(a.rs, a.t - t0);
      }
      return seen.size === want.size;
    },
    { what: `acks from new actives for ${rs.length} RS of ${victim}`, timeoutMs: 30_000, intervalMs: 2 },
  );
  const ts = [...seen.values()];
  return { first: Math.min(...ts), all: Math.max(...ts) };
}

/**
 * Where the time went, from the services' own warn-level logs (their `time`, ms resolution): when
 * a fault manager first logged the fault, and when the controller answered the report (after the
 * promoted copies acknowledged their SetRoles; the routes went out before that).
 */
function phases(cl: CounterCluster, victim: string, wall0: number): string {
  const at = (lines: string[], test: (o: Record<string, unknown>) => boolean): number | undefined => {
    let best: number | undefined;
    for (const l of lines) {
      if (!l.startsWith('{')) continue;
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        const t = Date.parse(String(o['time']));
        if (t >= wall0 && test(o) && (best === undefined || t < best)) best = t;
      } catch {
        // not a log line
      }
    }
    return best === undefined ? undefined : best - wall0;
  };
  const fm = cl.faultManagers.flatMap((p) => (p?.output() ?? '').split('\n'));
  const ctl = cl.controllers.flatMap((p) => (p?.output() ?? '').split('\n'));
  const detected = at(fm, (o) => o['msg'] === 'fault detected' && o['copy'] === victim);
  const handled = at(ctl, (o) => o['msg'] === 'fault report handled' && JSON.stringify(o['results'] ?? '').includes(`${victim}:`));
  return `; detected +${detected ?? '?'} ms, report answered +${handled ?? '?'} ms`;
}

async function settle(cl: CounterCluster, victim: string): Promise<void> {
  await settleOnce(cl, victim).catch(async (e: unknown) => {
    await dump(cl, 'not settled');
    throw e;
  });
}

/** What the cluster looked like when a step stalled (catching-up standbys are starred). */
async function dump(cl: CounterCluster, what: string): Promise<void> {
  {
    const st = await cl.status(true);
    console.log(`  ${what}: ${JSON.stringify(st.copies.map((c) => [c.copyId, CopyStatus[c.status], c.activeCount, c.standbyCount, c.incarnation]))}`);
    for (const a of st.assignments) console.log(`    rs ${a.rs} epoch ${a.epoch} v${a.version}: ${a.members.map((m) => `${m.copyId}:${Role[m.role]}${m.catchingUp ? '*' : ''}`).join(' ')}`);
    for (const [id, p] of cl.copies) for (const l of p.output().split('\n').filter((x) => /"level":(40|50)/.test(x)).slice(-5)) console.log(`    ${id}: ${l.slice(0, 300)}`);
    for (const [i, p] of cl.controllers.entries()) for (const l of (p?.output() ?? '').split('\n').filter((x) => /"level":(40|50)/.test(x)).slice(-8)) console.log(`    ctl-${i + 1}: ${l.slice(0, 300)}`);
    for (const [i, p] of cl.faultManagers.entries()) for (const l of (p?.output() ?? '').split('\n').filter((x) => /"level":(40|50)/.test(x)).slice(-5)) console.log(`    fm-${i + 1}: ${l.slice(0, 300)}`);
  }
}

async function settleOnce(cl: CounterCluster, victim: string): Promise<void> {
  await waitFor(
    async () => {
      const s = await cl.status(true);
      const up = s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP);
      const actives = up.map((c) => c.activeCount);
      return (
        up.length === 3 &&
        up.some((c) => c.copyId === victim) &&
        Math.max(...actives) - Math.min(...actives) <= 1 &&
        s.assignments.every((a) => a.members.filter((m) => m.role === Role.ROLE_STANDBY).length === 1) &&
        // Every standby holds the state: a kill before that is a double fault (the RS's only
        // standby still catching up), not the single failover this bench measures.
        s.assignments.every((a) => a.members.every((m) => !m.catchingUp))
      );
    },
    { what: `${victim} back, balanced and caught up`, timeoutMs: 60_000 },
  );
}

async function main(): Promise<void> {
  console.log(`failover bench: ${CRASH_RUNS} kill -9 + ${HANG_RUNS} SIGSTOP runs, ${RS} RS, heartbeat ${HEARTBEAT_MS} ms x ${MISSED}, node ${process.version}`);
  const cl = await startCounterCluster({
    rsCount: RS,
    copies: 3,
    standbys: 1,
    faultManagers: 2,
    detection: { heartbeatIntervalMs: HEARTBEAT_MS, missedHeartbeats: MISSED },
    copyEnv: {
      ...(DEDUPE_WINDOW !== undefined ? { UNDERSTUDY_DEDUPE_WINDOW: DEDUPE_WINDOW } : {}),
      ...(SNAPSHOT_BYTES_IN_FLIGHT !== undefined ? { UNDERSTUDY_SNAPSHOT_BYTES_IN_FLIGHT: SNAPSHOT_BYTES_IN_FLIGHT } : {}),
      ...(SNAPSHOT_SPLIT_DEDUPE_BYTES !== undefined ? { UNDERSTUDY_SNAPSHOT_SPLIT_DEDUPE_BYTES: SNAPSHOT_SPLIT_DEDUPE_BYTES } : {}),
    },
  });
  const load = new Load(cl, keysPerRs(RS, 'fo-'));
  const crash: { first: number; all: number }[] = [];
  const hang: { first: number; all: number }[] = [];
  const retired: Proc[] = [];
  /** The whole machine's CPU over the fault runs (restarts and catch-ups included). */
  let busyPct = NaN;
  try {
    await waitFor(() => load.dropped + load.acks.length >= Math.max(100, WARM_ACKS), { what: `${WARM_ACKS} increments acknowledged (warm-up)`, timeoutMs: 600_000, intervalMs: 50 });
    load.paced = true;
    const ticks0 = machineTicks();
    for (let i = 0; i < CRASH_RUNS + HANG_RUNS; i++) {
      const isHang = i >= CRASH_RUNS;
      const { victim, rs } = await activesOf(cl);
      const p = cl.copies.get(victim)!;
      const t0 = performance.now();
      const wall0 = Date.now();
      p.signal(isHang ? 'SIGSTOP' : 'SIGKILL');
      const m = await measure(load, t0, victim, rs).catch(async (e: unknown) => {
        await dump(cl, `no acks from new actives for all of ${rs.join(',')}`);
        // The client's side: its route per RS and the copy that acknowledged each RS last.
        const last = new Map<number, Ack>();
        for (const a of load.acks) last.set(a.rs, a);
        for (const r of rs) {
          const ro = cl.routing.route('counter', r);
          const la = last.get(r);
          console.log(`    client rs ${r}: route ${ro?.activeCopyId ?? 'none'} epoch ${ro?.epoch ?? '-'}; last ack ${la ? `${(performance.now() - la.t).toFixed(0)} ms ago from ${la.copyId}` : 'none'}; failures so far ${load.failures}`);
        }
        throw e;
      });
      (isHang ? hang : crash).push(m);
      if (isHang) p.signal('SIGCONT');
      await p.kill();
      retired.push(p);
      await cl.restartCopy(victim);
      await settle(cl, victim);
      // After settling: the services' log lines have reached this process by then.
      console.log(`  ${isHang ? 'hang ' : 'crash'} ${i + 1}/${CRASH_RUNS + HANG_RUNS}: ${victim} (${rs.length} RS active) first ${m.first.toFixed(1)} ms, all ${m.all.toFixed(1)} ms${phases(cl, victim, wall0)}`);
    }
    busyPct = machineBusyPct(ticks0, machineTicks());
  } finally {
    await load.stop();
  }
  let lost = 0;
  let doubled = 0;
  for (const [key, n] of load.acked) {
    const v = await cl.routing.query<number>('counter', cl.routing.rsForKey('counter', key), { key });
    if (v < n) lost += n - v;
    if (v > n) doubled += v - n;
  }
  // Anything a copy logged as lost state is worth seeing next to the figures.
  for (const p of [...retired, ...cl.copies.values()]) {
    for (const line of p.output().split('\n')) if (line.includes('no member holds it') || line.includes('"level":50')) console.log(`  ${p.name}: ${line.slice(0, 400)}`);
  }
  await cl.stop();
  const f = (xs: { first: number }[]): number[] => xs.map((x) => x.first);
  const a = (xs: { all: number }[]): number[] => xs.map((x) => x.all);
  console.log(
    JSON.stringify({
      bench: 'failover',
      processes: PROCESSES,
      crash_p50_ms: r1(pct(f(crash), 50)),
      crash_p99_ms: r1(pct(f(crash), 99)),
      crash_max_ms: r1(Math.max(...f(crash))),
      hang_p50_ms: r1(pct(f(hang), 50)),
      hang_p99_ms: r1(pct(f(hang), 99)),
      hang_max_ms: r1(Math.max(...f(hang))),
      crash_all_p99_ms: r1(pct(a(crash), 99)),
      hang_all_p99_ms: r1(pct(a(hang), 99)),
      rate_per_rs: RATE_PER_RS,
      warm_acks: WARM_ACKS,
      machine_busy_pct: Math.round(busyPct),
      heartbeat_ms: HEARTBEAT_MS,
      missed_heartbeats: MISSED,
      dedupe_window: Number(DEDUPE_WINDOW ?? 10_000),
      snapshot_bytes_in_flight: Number(SNAPSHOT_BYTES_IN_FLIGHT ?? 262_144),
      snapshot_split_dedupe_bytes: Number(SNAPSHOT_SPLIT_DEDUPE_BYTES ?? 65_536),
      crash_runs: crash.length,
      hang_runs: hang.length,
      acked: [...load.acked.values()].reduce((x, y) => x + y, 0),
      failed_deliveries: load.failures,
      lost,
      doubled,
    }),
  );
  process.exit(0);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
