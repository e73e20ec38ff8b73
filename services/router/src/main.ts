/**
 * Router process entry. Telemetry starts first so the gRPC servers and clients created
 * afterwards are traced; the process body is in run.ts.
 */
import { ensureError, startTelemetry } from '@understudy/runtime';

const telemetry = startTelemetry({ serviceName: 'understudy-router' });
void import('./run')
  .then((m) => m.main(telemetry))
  .catch((e: unknown) => {
    process.stderr.write(`understudy-router: ${ensureError(e).message}\n`);
    process.exit(1);
  });
