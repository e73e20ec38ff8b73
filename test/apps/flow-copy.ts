/** A copy of a data-flow test app: `FLOW_APP=fwd|sink node --import tsx test/apps/flow-copy.ts --copy-id … --controllers …`. */
import { runCopyProcess } from '@understudy/adsm';
import { ensureError } from '@understudy/runtime';
import { fwdApp, sinkApp } from './flow';

const name = process.env.FLOW_APP;
const run = name === 'fwd' ? runCopyProcess(fwdApp) : name === 'sink' ? runCopyProcess(sinkApp) : Promise.reject(new Error(`FLOW_APP must be fwd or sink, got ${JSON.stringify(name)}`));
run.catch((e: unknown) => {
  process.stderr.write(`flow copy: ${ensureError(e).message}\n`);
  process.exit(1);
});
