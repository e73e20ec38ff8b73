/**
 * A copy of one usage-accounting application as a process:
 * `node --import tsx examples/usage-accounting/src/copy.ts <collector|aggregator|enhancer|output> --copy-id … --controllers …`
 * (the other flags are every copy's: `--routers`, `--fault-managers`, `--host`, …).
 */
import { ensureError, startTelemetry } from '@understudy/runtime';

const APPS = ['collector', 'aggregator', 'enhancer', 'output'] as const;
const [name, ...flags] = process.argv.slice(2);

// Telemetry first; ADSM and the app load after it so their gRPC calls are traced.
const telemetry = startTelemetry({ serviceName: `usage-${name ?? 'copy'}` });
async function main(): Promise<void> {
  if (!(APPS as readonly (string | undefined)[]).includes(name)) throw new Error(`first argument: the application, one of ${APPS.join(', ')} (got ${JSON.stringify(name ?? '')})`);
  const adsm = await import('@understudy/adsm');
  const opts = { telemetry, argv: flags };
  if (name === 'collector') await adsm.runCopyProcess((await import('./collector')).collectorApp, opts);
  else if (name === 'aggregator') await adsm.runCopyProcess((await import('./aggregator')).aggregatorApp, opts);
  else if (name === 'enhancer') await adsm.runCopyProcess((await import('./enhancer')).enhancerApp, opts);
  else await adsm.runCopyProcess((await import('./output')).outputApp, opts);
}
main().catch((e: unknown) => {
  process.stderr.write(`usage-accounting copy: ${ensureError(e).message}\n`);
  process.exit(1);
});
