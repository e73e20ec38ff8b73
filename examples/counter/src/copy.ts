/** A counter copy process: `node --import tsx examples/counter/src/copy.ts --copy-id c1 --controllers 127.0.0.1:7100`. */
import { ensureError, startTelemetry } from '@understudy/runtime';

// Telemetry first; ADSM and the app load after it so their gRPC calls are traced.
const telemetry = startTelemetry({ serviceName: 'counter' });
void Promise.all([import('@understudy/adsm'), import('./counter')])
  .then(([adsm, { counterApp }]) => adsm.runCopyProcess(counterApp, { telemetry }))
  .catch((e: unknown) => {
    process.stderr.write(`counter copy: ${ensureError(e).message}\n`);
    process.exit(1);
  });
