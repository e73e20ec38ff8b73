/**
 * Load Manager process entry. Telemetry starts first so the gRPC servers and clients created
 * afterwards are traced; the process body is in run.ts.
 */
import { ensureError, startTelemetry } from '@understudy/runtime';

const telemetry = startTelemetry({ serviceName: 'understudy-load-manager' });
void import('./run')
  .then((m) => m.main(telemetry))
  .catch((e: unknown) => {
    process.stderr.write(`understudy-load-manager: ${ensureError(e).message}\n`);
    process.exit(1);
  });
