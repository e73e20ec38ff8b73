/**
 * `npm start`: the usage-accounting pipeline on one host. Starts a System Controller (embedded
 * store under `.data/usage`, or Redis when REDIS_URL is set), a Fault Manager, two routers, ALDM
 * (gRPC 127.0.0.1:7400, HTTP 127.0.0.1:8080) and three copies of each of collector, aggregator,
 * enhancer and output as separate processes; the output's exporter writes billing records to
 * `.data/usage/billing/` (or a Redis stream); a load generator sends usage records through ALDM.
 * Every second it prints what was sent and acknowledged, what was billed per service and how many
 * copies are up. kill -9 any copy pid it prints: the copy is started again, nothing is lost.
 *
 * Flags: `--rate <records/s>` (default 300), `--records <n>` (stop after n records, print the
 * reconciliation and exit: 0 when billed = acknowledged), `--quiet` (no per-second line).
 * Ctrl-C: stop sending, let the pipeline drain (up to 15 s), print the reconciliation, stop all.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { CopyStatus, Role } from '@understudy/proto';
import { ensureError } from '@understudy/runtime';
import { MASTER_RS } from './enhancer';
import { BillingExporter } from './exporter';
import { UsageLoad } from './load';
import type { OutputTotals } from './output';
import { startPipeline, type Pipeline } from './pipeline';
import { DEFAULT_RATES, SERVICES, addTotals, emptyTotals, type Totals, type Service } from './records';
import { FileSink, RedisStreamSink, type BillingSink } from './sink';
import { STAGES } from './topology';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const DATA = path.join(ROOT, '.data', 'usage');
const CONTROLLER = process.env.UNDERSTUDY_CONTROLLERS?.split(',')[0] ?? '127.0.0.1:7100';
const HOSTS = ['host-a', 'host-b', 'host-c'];

const { values: flags } = parseArgs({ options: { rate: { type: 'string' }, records: { type: 'string' }, quiet: { type: 'boolean' } } });
const RATE = Number(flags.rate ?? 300);
const RECORDS = flags.records === undefined ? undefined : Number(flags.records);
if (!Number.isFinite(RATE) || RATE <= 0 || RATE > 100_000) throw new Error(`--rate: records per second from 1 to 100000, got ${flags.rate}`);
if (RECORDS !== undefined && (!Number.isSafeInteger(RECORDS) || RECORDS <= 0)) throw new Error(`--records: a positive integer, got ${flags.records}`);

const say = (line = ''): void => void process.stdout.write(`${line}\n`);
const money = (micros: number): string => (micros / 1e6).toFixed(2);

async function outputTotals(p: Pipeline): Promise<{ totals: Record<Service, Totals>; unexported: number }> {
  const n = p.routing.rsCount('output') ?? 0;
  const parts = await Promise.all(Array.from({ length: n }, (_, rs) => p.routing.query<OutputTotals>('output', rs, { op: 'totals' }, { deadlineMs: 3000 })));
  const totals = emptyTotals();
  for (const x of parts) addTotals(totals, x.totals);
  return { totals, unexported: parts.reduce((k, x) => k + x.unexported, 0) };
}

async function main(): Promise<void> {
  const redisUrl = process.env.REDIS_URL ?? '';
  // A fresh run each time: application state lives in the copies, so old billing files or an old
  // controller state would not match it.
  fs.rmSync(DATA, { recursive: true, force: true });
  fs.mkdirSync(path.join(DATA, 'logs'), { recursive: true });
  const logs = new Map<string, fs.WriteStream>();
  const logTo = (name: string, line: string): void => {
    let out = logs.get(name);
    if (!out) logs.set(name, (out = fs.createWriteStream(path.join(DATA, 'logs', `${name}.log`), { flags: 'a' })));
    out.write(`${line}\n`);
  };
  say(`Understudy usage accounting — store: ${redisUrl ? `Redis at ${redisUrl}` : 'embedded (.data/usage/controller)'}; starting 17 processes…`);
  const p = await startPipeline({
    root: ROOT,
    dataDir: path.join(DATA, 'controller'),
    redisUrl,
    controllerAddress: CONTROLLER,
    faultManagerAddress: '127.0.0.1:7200',
    aldmAddress: '127.0.0.1:7400',
    aldmHttpAddress: '127.0.0.1:8080',
    aldmDirect: true,
    // Ctrl-C reaches this job only; it drains the pipeline before stopping the processes.
    ownProcessGroups: true,
    hostOf: (id) => HOSTS[(Number(id.split('-').pop()) - 1) % HOSTS.length]!,
    logLevel: process.env.LOG_LEVEL ?? 'warn',
    onLine: logTo,
    onEvent: (m) => say(`  ! ${m}`),
  });
  const redis = redisUrl ? new Redis(redisUrl, { maxRetriesPerRequest: 3 }) : undefined;
  const runId = `u${Date.now().toString(36)}`;
  const sink: BillingSink = redis ? new RedisStreamSink(redis, `understudy:usage:${runId}:`) : new FileSink(path.join(DATA, 'billing'));
  const exporter = new BillingExporter({ routing: p.routing, sink, onError: (rs, e) => logTo('exporter', JSON.stringify({ rs, err: e.message })) });
  exporter.start();
  await p.settled(60_000);

  say(`  controller ${p.controllerAddress}   fault manager ${p.faultManagerAddress}   routers ${p.routerAddresses.join(', ')}`);
  say(`  ALDM gRPC ${p.aldmAddress}   HTTP http://${p.aldmHttpAddress}/v1/apps/collector/events`);
  say(`  billing records → ${sink.describe}`);
  const s0 = await p.status();
  for (const app of STAGES) {
    const row = [...p.copies.values()].filter((c) => c.app === app).map((c) => {
      const active = s0.assignments.filter((a) => a.app === app && a.members.some((m) => m.copyId === c.copyId && m.role === Role.ROLE_ACTIVE)).map((a) => a.rs);
      return `${c.copyId} pid ${c.proc?.pid} (active rs ${active.join(',') || '-'})`;
    });
    say(`  ${app.padEnd(10)} ${row.join('   ')}`);
  }
  say();
  say('Kill a copy mid-stream and watch nothing get lost, from another terminal:');
  say('  kill -9 <pid>                                  # its standbys take over; the job starts it again');
  say('  npx understudy status --assignments            # who is active where, epochs');
  say('  npx understudy switchover output 1 --to <a standby of output/1>');
  say(`  curl -s -XPOST http://${p.aldmHttpAddress}/v1/apps/collector/events -d '{"key":"sub-0042","idempotencyKey":"my-1","payload":{"recordId":"my-1","subscriber":"sub-0042","service":"sms","units":3}}'`);
  say(`Logs: .data/usage/logs/*.log.  ${RECORDS ? `Sending ${RECORDS} records at ${RATE}/s.` : `Sending ${RATE} records/s; Ctrl-C stops.`}`);
  say();

  const load = new UsageLoad({ aldmAddress: p.aldmAddress, runId, ratePerSec: RATE, window: 1000, ...(RECORDS ? { total: RECORDS } : {}) });
  load.start();
  const t0 = Date.now();
  let rateChanges = 0;
  let busy = false;
  const tick = async (): Promise<void> => {
    if (busy) return; // a slow round (failover in progress) is not stacked up
    busy = true;
    try {
      const s = (Date.now() - t0) / 1000;
      // Every 20 s a rate change through the enhancer's master RS (shared data).
      if (s >= 20 * (rateChanges + 1)) {
        const service = SERVICES[rateChanges % SERVICES.length]!;
        const rateMicros = DEFAULT_RATES[service] + 1000 * (rateChanges + 1);
        rateChanges++;
        void p.routing.deliver('enhancer', '', { op: 'setRate', service, rateMicros }, { rs: MASTER_RS, deadlineMs: 30_000 }).then(
          () => say(`  rate of ${service} is now ${money(rateMicros)} per unit (master RS ${MASTER_RS} of the enhancer; every copy follows)`),
          (e: unknown) => say(`  rate change failed: ${ensureError(e).message}`),
        );
      }
      if (flags.quiet) return;
      const [out, status] = await Promise.all([outputTotals(p), p.status()]);
      const up = status.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP).length;
      const billed = SERVICES.map((sv) => `${sv} ${out.totals[sv].units}u ${money(out.totals[sv].amountMicros)}`).join(' | ');
      const records = SERVICES.reduce((n, sv) => n + out.totals[sv].records, 0);
      say(`${s.toFixed(0).padStart(4)}s  sent ${load.generated}  acked ${load.acked}  billed ${records}  [${billed}]  copies up ${up}/${p.copies.size}`);
    } catch (e) {
      say(`${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s  sent ${load.generated}  acked ${load.acked}  (totals unavailable: ${ensureError(e).message.split('\n')[0]})`);
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick(), 1000);

  let finishing: Promise<void> | undefined;
  const finish = (why: string): Promise<void> =>
    (finishing ??= (async () => {
      clearInterval(timer);
      load.pause();
      say(`\n${why}: stopped sending; waiting for the pipeline to drain (at most 15 s)…`);
      const until = Date.now() + 15_000;
      let ok = false;
      let out = { totals: emptyTotals(), unexported: -1 };
      while (Date.now() < until) {
        try {
          out = await outputTotals(p);
          const billed = SERVICES.reduce((n, sv) => n + out.totals[sv].records, 0);
          ok = load.outstanding === 0 && billed === load.acked && out.unexported === 0;
          if (ok) break;
        } catch {
          // a failover in progress: ask again
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      say('Reconciliation (acknowledged at the ingress → billed by the output):');
      for (const sv of SERVICES) {
        const a = load.ackedTotals[sv];
        const b = out.totals[sv];
        say(`  ${sv.padEnd(6)} records ${a.records} → ${b.records}   units ${a.units} → ${b.units}   amount ${money(b.amountMicros)}   ${a.records === b.records && a.units === b.units ? 'OK' : 'MISMATCH'}`);
      }
      const restarts = [...p.copies.values()].reduce((n, c) => n + c.restarts, 0);
      say(`  ${load.acked} acknowledged, ${exporter.total} written to ${sink.describe}; ${restarts} copy restarts; ${ok ? 'nothing lost, nothing doubled' : 'NOT drained'}`);
      load.close();
      await exporter.stop();
      await sink.close();
      redis?.disconnect();
      await p.stop();
      for (const l of logs.values()) l.end();
      process.exitCode = ok ? 0 : 1;
    })());
  process.once('SIGINT', () => void finish('Ctrl-C').then(() => process.exit()));
  process.once('SIGTERM', () => void finish('SIGTERM').then(() => process.exit()));
  if (RECORDS) {
    while (!load.finished) await new Promise((r) => setTimeout(r, 200));
    await finish(`${RECORDS} records acknowledged`);
    process.exit();
  }
}

main().catch((e) => {
  process.stderr.write(`usage accounting failed: ${ensureError(e).message}\n`);
  if (/EADDRINUSE|address already in use|No address added/i.test(ensureError(e).message)) {
    process.stderr.write(`Is something already listening on ${CONTROLLER}, 7200, 7400 or 8080? Stop it (another npm start?) first.\n`);
  }
  process.exit(1);
});
