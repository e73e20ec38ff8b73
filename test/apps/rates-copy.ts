/** A `rates` copy process (test/apps/rates.ts): same flags as every copy (`--copy-id`, `--controllers`, …). */
import { ensureError, startTelemetry } from '@understudy/runtime';

const telemetry = startTelemetry({ serviceName: 'rates' });
void Promise.all([import('@understudy/adsm'), import('./rates')])
  .then(([adsm, { ratesApp }]) => adsm.runCopyProcess(ratesApp, { telemetry }))
  .catch((e: unknown) => {
    process.stderr.write(`rates copy: ${ensureError(e).message}\n`);
    process.exit(1);
  });
