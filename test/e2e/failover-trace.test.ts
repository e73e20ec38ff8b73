/**
 * A failover is one trace (R-TR-5): fault manager `fault.detect` → ReportFault (client, server)
 * → controller `failover` → `failover.isolate` (fenced persist) → `failover.promote` (SetRoles to
 * the new actives) → `failover.routes_published`, with copy/RS/epoch attributes.
 *
 * Controller, fault manager and three counter copies run in THIS process (its own process under
 * node --test) so one in-memory exporter sees every span; telemetry starts before the gRPC
 * modules load, as in the services' entry files. The fault is a copy's process going away: its
 * heartbeat stream breaks.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { silentLogger, startTelemetry, unaryCall, openStore, type Store } from '@understudy/runtime';
import { waitFor } from '../harness/wait';

const exporter = new InMemorySpanExporter();
const telemetry = startTelemetry({ serviceName: 'failover-trace-test', spanProcessors: [new SimpleSpanProcessor(exporter)], otlpEndpoint: '' });
const cleanup: (() => Promise<void> | void)[] = [];

after(async () => {
  for (const f of cleanup.reverse()) await f();
  await telemetry.shutdown();
});

function ms(s: ReadableSpan): number {
  return s.startTime[0] * 1e3 + s.startTime[1] / 1e6;
}

test('one trace per failover: detect → isolate → promote → routes_published, in order, with copy/RS/epoch', async () => {
  const proto = await import('@understudy/proto');
  const { ControllerClient, startCopy } = await import('@understudy/adsm');
  const { startController } = await import('@understudy/system-controller');
  const { startFaultManager } = await import('@understudy/fault-manager');
  const { counterApp } = await import('../../examples/counter/src/counter');

  const store: Store = await openStore({});
  cleanup.push(() => store.close());
  const controller = await startController({ controllerId: 'ctl-ft', store, logger: silentLogger(), passiveTimeoutMs: 100, tickIntervalMs: 100 });
  cleanup.push(() => controller.stop());
  const ctl = new ControllerClient({ addresses: [controller.address], callTimeoutMs: 10_000 });
  cleanup.push(() => ctl.close());
  await ctl.withLeader((c) =>
    unaryCall(c.applyTopology.bind(c), {
      topology: {
        apps: [
          {
            name: 'counter',
            mode: proto.Mode.MODE_DISTRIBUTED_FAULT_TOLERANT,
            rsCount: 4,
            standbys: 1,
            minCopies: 3,
            partitioning: proto.Partitioning.PARTITIONING_HASH,
            rangeStarts: [],
            detection: { heartbeatIntervalMs: 100, missedHeartbeats: 5, maxEventLoopLagMs: 0, maxCpuPercent: 0, maxRssBytes: 0, maxQueueDepth: 0, breachSamples: 0, probeIntervalMs: 0, probeTimeoutMs: 0 },
          },
        ],
        edges: [],
      },
    }),
  );
  const fm = await startFaultManager({ id: 'fm-ft', controllerAddresses: [controller.address], logger: silentLogger() });
  cleanup.push(() => fm.stop());
  const copies = await Promise.all(
    ['t1', 't2', 't3'].map((id) =>
      startCopy({ app: counterApp, copyId: id, host: `h-${id}`, controllerAddresses: [controller.address], faultManagerAddresses: [fm.address], heartbeatIntervalMs: 100, logger: silentLogger(), onFenced: () => undefined }),
    ),
  );
  cleanup.push(() => Promise.all(copies.map((c) => c.stop())).then(() => undefined));
  const status = () => ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: 'counter', includeAssignments: true }));
  await waitFor(async () => {
    const s = await status();
    return !s.passive && s.apps[0]?.rsWithActive === 4 && s.apps[0].rsFullyReplicated === 4;
  }, { what: 'counter placed' });

  const before = await status();
  const victim = [...before.copies].sort((a, b) => b.activeCount - a.activeCount)[0]!.copyId;
  const victimRs = before.assignments.filter((a) => a.members[0]?.copyId === victim && a.members[0].role === proto.Role.ROLE_ACTIVE).map((a) => a.rs);
  assert.ok(victimRs.length > 0);
  exporter.reset();
  // The process "dies": its heartbeat stream to the fault manager breaks.
  await copies.find((c) => c.copyId === victim)!.stop();

  const failover = await waitFor(
    () => exporter.getFinishedSpans().find((s) => s.name === 'failover' && s.attributes['understudy.copy_id'] === victim),
    { what: 'failover span' },
  );
  const trace = failover.spanContext().traceId;
  const inTrace = (): ReadableSpan[] => exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === trace);
  const named = (n: string): ReadableSpan => {
    const s = inTrace().find((x) => x.name === n);
    assert.ok(s, `span ${n} in the failover trace (have: ${inTrace().map((x) => x.name).join(', ')})`);
    return s;
  };
  await waitFor(() => inTrace().some((s) => s.name === 'fault.detect'), { what: 'fault.detect finished' });
  const detect = named('fault.detect');
  const isolate = named('failover.isolate');
  const promote = named('failover.promote');
  const routes = named('failover.routes_published');

  // Structure: the controller's failover span hangs under the fault manager's detect span (via
  // the gRPC client/server spans); the three steps are children of `failover`.
  const byId = new Map(inTrace().map((s) => [s.spanContext().spanId, s]));
  let up: ReadableSpan | undefined = failover;
  const chain: string[] = [];
  while (up) {
    chain.push(up.name);
    up = up.parentSpanContext ? byId.get(up.parentSpanContext.spanId) : undefined;
  }
  assert.equal(chain[chain.length - 1], 'fault.detect', `failover's ancestry ends at fault.detect: ${chain.join(' <- ')}`);
  for (const s of [isolate, promote, routes]) assert.equal(s.parentSpanContext?.spanId, failover.spanContext().spanId, `${s.name} is a child of failover`);

  // Order: detect starts first, then isolate, promote, routes_published.
  assert.ok(ms(detect) <= ms(failover));
  assert.ok(ms(isolate) <= ms(promote), 'isolate before promote');
  assert.ok(ms(promote) <= ms(routes), 'promote before routes_published');
  const isolateEnd = isolate.endTime[0] * 1e3 + isolate.endTime[1] / 1e6;
  // Span start times can be millisecond-granular in the SDK while end times are not: allow 1 ms.
  assert.ok(isolateEnd <= ms(promote) + 1, `isolation (fenced persist) completes before any promotion is sent: ends ${isolateEnd}, promote starts ${ms(promote)}`);

  // Attributes: copy, incarnation, kind; promoted RS and their new epochs.
  assert.equal(detect.attributes['understudy.copy_id'], victim);
  assert.equal(detect.attributes['understudy.fault_kind'], 'CRASH');
  assert.equal(failover.attributes['understudy.outcome'], 'FAULT_OUTCOME_FAILED_OVER');
  assert.equal(failover.attributes['understudy.failed_over'], victimRs.length);
  const promoted = promote.attributes['understudy.rs'] as string[];
  const epochs = promote.attributes['understudy.epochs'] as number[];
  for (const r of victimRs) {
    const i = promoted.indexOf(`counter/${r}`);
    assert.ok(i >= 0, `RS ${r} promoted in this trace (${promoted.join(',')})`);
    const was = before.assignments.find((a) => a.rs === r)!.epoch;
    assert.ok(epochs[i]! > was, `RS ${r}: new epoch ${epochs[i]} > ${was}`);
  }
  assert.ok((routes.attributes['understudy.routes'] as number) >= victimRs.length);
});
