/**
 * RoutingClient against a real controller process: once the route table is loaded, a delivery or
 * query to an application the table does not hold fails at once with NOT_FOUND instead of waiting
 * out its deadline.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { Mode, Partitioning } from '@understudy/proto';
import { NotFoundError, unaryCall } from '@understudy/runtime';
import { ControllerClient, RoutingClient } from '../src/index';
import { freePort, startControllerProc, type Proc } from '../../../test/harness/processes';
import { waitFor } from '../../../test/harness/wait';

let dir: string;
let controller: Proc;
let ctl: ControllerClient;
let routing: RoutingClient;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-rc-'));
  const port = await freePort();
  controller = await startControllerProc({ id: 'ctl-rc', port, dataDir: dir });
  const addresses = [`127.0.0.1:${port}`];
  ctl = new ControllerClient({ addresses, callTimeoutMs: 10_000 });
  await ctl.withLeader((c) =>
    unaryCall(c.applyTopology.bind(c), {
      topology: { apps: [{ name: 'counter', mode: Mode.MODE_DISTRIBUTED, rsCount: 2, standbys: 0, minCopies: 1, partitioning: Partitioning.PARTITIONING_HASH, rangeStarts: [], detection: undefined }], edges: [] },
    }), 10_000);
  routing = new RoutingClient({ controllerAddresses: addresses, deliverDeadlineMs: 10_000 });
});

after(async () => {
  routing?.close();
  ctl?.close();
  await controller?.kill();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('an application missing from the loaded route table is NOT_FOUND at once, not after the deadline', async () => {
  await waitFor(() => routing.tableInfo().synced, { what: 'route table loaded' });
  assert.equal(routing.rsCount('counter'), 2, 'the declared app is in the table');
  const t0 = Date.now();
  await assert.rejects(routing.deliver('nosuchapp', 'k', { by: 1 }), (e: unknown) => e instanceof NotFoundError && /nosuchapp/.test(e.message));
  await assert.rejects(routing.query('nosuchapp', 0, {}), NotFoundError);
  assert.ok(Date.now() - t0 < 2000, `failed fast (took ${Date.now() - t0} ms of a 10 s deadline)`);
});
