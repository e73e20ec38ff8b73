/**
 * `npm run bench -- usage-accounting [records]`: throughput of the usage-accounting pipeline
 * (examples/usage-accounting) on this machine without faults: records acknowledged per second at
 * the ingress (ALDM IngestStream) and billed per second into the files, and the CPU seconds each
 * kind of process used. ALDM hands records to the collector directly (as `npm start` does);
 * USAGE_ALDM_VIA_ROUTER=1 sends them through the routers instead (unary Send per record).
 * Last line: `{"bench":"usage-accounting","records":…,"acked_per_s":…,"billed_per_s":…,"cpu_s":{…}}`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BillingExporter } from '../examples/usage-accounting/src/exporter';
import { UsageLoad } from '../examples/usage-accounting/src/load';
import { startPipeline } from '../examples/usage-accounting/src/pipeline';
import { FileSink, readBillingFiles } from '../examples/usage-accounting/src/sink';
import { cpuSeconds } from './lib';

const RECORDS = Number(process.argv[2] ?? 20_000);
const ROOT = path.resolve(__dirname, '..');

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-usage-bench-'));
  const p = await startPipeline({ root: ROOT, dataDir: path.join(dir, 'controller'), aldmDirect: process.env.USAGE_ALDM_VIA_ROUTER !== '1' });
  const sink = new FileSink(path.join(dir, 'billing'));
  const exporter = new BillingExporter({ routing: p.routing, sink });
  try {
    exporter.start();
    await p.settled(60_000);
    const procs = (): [string, number][] => [
      ...[...p.copies.values()].map((c) => [c.app, c.proc?.pid ?? 0] as [string, number]),
      ...p.routers.map((r) => ['router', r?.pid ?? 0] as [string, number]),
      ...p.services.map((s) => [s.name, s.pid] as [string, number]),
      ['bench (load + exporter)', process.pid],
    ];
    const cpu0 = procs().map(([, pid]) => cpuSeconds([pid]));
    const load = new UsageLoad({ aldmAddress: p.aldmAddress, runId: `b${Date.now().toString(36)}`, total: RECORDS, window: 2000 });
    const t0 = Date.now();
    load.start();
    const timer = setInterval(() => process.stderr.write(`${load.acked}/${RECORDS} acknowledged, ${exporter.total} billed\n`), 5000);
    while (!load.finished) await new Promise((r) => setTimeout(r, 100));
    const ackedS = (Date.now() - t0) / 1000;
    while (readBillingFiles(sink.dir).length < RECORDS) await new Promise((r) => setTimeout(r, 200));
    const billedS = (Date.now() - t0) / 1000;
    clearInterval(timer);
    load.close();
    const cpu: Record<string, number> = {};
    procs().forEach(([name, pid], i) => (cpu[name] = Math.round(((cpu[name] ?? 0) + cpuSeconds([pid]) - cpu0[i]!) * 10) / 10));
    process.stdout.write(`${RECORDS} records: acknowledged in ${ackedS.toFixed(1)} s, billed in ${billedS.toFixed(1)} s\n`);
    process.stdout.write(`${JSON.stringify({ bench: 'usage-accounting', records: RECORDS, acked_per_s: Math.round(RECORDS / ackedS), billed_per_s: Math.round(RECORDS / billedS), resends: load.resends, cpu_s: cpu })}\n`);
  } finally {
    await exporter.stop();
    await sink.close();
    await p.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench usage-accounting: ${String(e)}\n`);
    process.exit(1);
  },
);
