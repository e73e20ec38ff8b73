/** A counter copy process: `node --import tsx examples/counter/src/copy.ts --copy-id c1 --controllers 127.0.0.1:7100`. */
import { ensureError, startTelemetry } from '@understudy/runtime';

// Telemetry first, everything else loaded after it so gRPC clients and servers are traced.
const telemetry = startTelemetry({ serviceName: 'counter' });
void import('./copy-run')
  .then((m) => m.main(telemetry))
  .catch((e: unknown) => {
    process.stderr.write(`counter: ${ensureError(e).message}\n`);
    process.exit(1);
  });
