/**
 * RoutingClient.deliver over DeliverStream links, against in-process gRPC servers: a fake
 * controller (its route watch is all the client needs) and two fake copies that implement only
 * DeliverStream (a unary Deliver is answered UNIMPLEMENTED, so a test fails if the client used it).
 *
 * - Concurrent deliveries to one copy share one long-lived stream.
 * - An attempt nobody answers gives up after `attemptTimeoutMs` and is retried with the same
 *   message id; the late answer of the first attempt is ignored.
 * - NOT_ACTIVE from the old active: the delivery is retried (same message id) until the new
 *   route comes, then there.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import {
  AdsmServiceService,
  ControllerServiceService,
  Mode,
  Partitioning,
  type DeliverRequest,
  type DeliverStreamRequest,
  type DeliverStreamResponse,
  type Route,
  type WatchRoutesResponse,
} from '@understudy/proto';
import { startGrpcServer, type GrpcServer } from '@understudy/runtime';
import { RoutingClient } from '../src/index';
import { waitFor } from '../../../test/harness/wait';

const log = pino({ level: 'silent' });

type Answer = 'ok' | 'silent' | 'not-active';

/** A copy that serves DeliverStream only; `next` decides how each request is answered. */
class FakeCopy {
  server!: GrpcServer;
  streams = 0;
  unary = 0;
  readonly seen: DeliverRequest[] = [];
  /** Answers for the next requests, in order; 'ok' once it is empty. */
  readonly next: Answer[] = [];
  /** Requests held without an answer: answer them later with `release`. */
  private readonly held: { call: grpc.ServerDuplexStream<DeliverStreamRequest, DeliverStreamResponse>; m: DeliverStreamRequest }[] = [];

  constructor(readonly copyId: string) {}

  async start(): Promise<void> {
    this.server = await startGrpcServer({
      address: '127.0.0.1:0',
      logger: log,
      services: [
        {
          definition: AdsmServiceService,
          implementation: {
            deliver: (_call: unknown, cb: grpc.sendUnaryData<never>) => {
              this.unary++;
              cb({ code: grpc.status.UNIMPLEMENTED, details: 'this fake copy serves DeliverStream only' });
            },
            deliverStream: (call: grpc.ServerDuplexStream<DeliverStreamRequest, DeliverStreamResponse>) => {
              this.streams++;
              call.on('data', (m: DeliverStreamRequest) => {
                this.seen.push(m.request!);
                const a = this.next.shift() ?? 'ok';
                if (a === 'silent') this.held.push({ call, m });
                else this.answer(call, m, a);
              });
              call.on('end', () => call.end());
              call.on('error', () => undefined);
            },
          },
        },
      ],
    });
  }

  /** Answer every held request now (late: the client gave up on them). */
  release(): void {
    for (const { call, m } of this.held.splice(0)) this.answer(call, m, 'ok');
  }

  private answer(call: grpc.ServerDuplexStream<DeliverStreamRequest, DeliverStreamResponse>, m: DeliverStreamRequest, a: Answer): void {
    const r = m.request!;
    if (a === 'not-active') {
      call.write({ correlationId: m.correlationId, response: undefined, statusCode: grpc.status.FAILED_PRECONDITION, statusMessage: `NOT_ACTIVE: ${this.copyId} is not active for ${r.app}/${r.rs}`, statusMetadata: {}, more: [] });
      return;
    }
    const reply = Buffer.from(JSON.stringify({ copy: this.copyId, messageId: r.messageId }));
    call.write({ correlationId: m.correlationId, response: { reply, epoch: 1, duplicate: false, copyId: this.copyId }, statusCode: 0, statusMessage: '', statusMetadata: {}, more: [] });
  }
}

/** A controller whose route watch serves one app with one RS; `moveTo` publishes a new active. */
class FakeController {
  server!: GrpcServer;
  private readonly watchers = new Set<grpc.ServerWritableStream<unknown, WatchRoutesResponse>>();
  private route: Route;

  constructor(first: FakeCopy) {
    this.route = this.routeTo(first, 1);
  }

  private routeTo(c: FakeCopy, epoch: number): Route {
    return { app: 'app', rs: 0, epoch, activeCopyId: c.copyId, activeAddress: c.server.address, previousCopyId: '', previousAddress: '', standbys: [] };
  }

  async start(): Promise<void> {
    this.server = await startGrpcServer({
      address: '127.0.0.1:0',
      logger: log,
      services: [
        {
          definition: ControllerServiceService,
          implementation: {
            watchRoutes: (call: grpc.ServerWritableStream<unknown, WatchRoutesResponse>) => {
              this.watchers.add(call);
              call.on('cancelled', () => this.watchers.delete(call));
              call.write(this.message(true));
            },
          },
        },
      ],
    });
  }

  moveTo(c: FakeCopy): void {
    this.route = this.routeTo(c, this.route.epoch + 1);
    for (const w of this.watchers) w.write(this.message(false));
  }

  private message(full: boolean): WatchRoutesResponse {
    return {
      full,
      stateVersion: this.route.epoch,
      routes: [this.route],
      apps: [{ name: 'app', mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: 1, standbys: 1, minCopies: 1, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] }],
      hasEdges: false,
      edges: [],
    };
  }
}

let a: FakeCopy;
let b: FakeCopy;
let ctl: FakeController;
let routing: RoutingClient;

before(async () => {
  a = new FakeCopy('a');
  b = new FakeCopy('b');
  await a.start();
  await b.start();
  ctl = new FakeController(a);
  await ctl.start();
  routing = new RoutingClient({ controllerAddresses: [ctl.server.address], deliverDeadlineMs: 10_000, attemptTimeoutMs: 300 });
  await routing.waitReady('app', 10_000);
});

after(async () => {
  routing?.close();
  await ctl?.server.shutdown(100);
  await a?.server.shutdown(100);
  await b?.server.shutdown(100);
});

test('concurrent deliveries to one copy share one DeliverStream (no unary Deliver)', async () => {
  const before = a.seen.length;
  const out = await Promise.all(Array.from({ length: 50 }, (_, i) => routing.deliver<{ copy: string; messageId: string }>('app', `k${i}`, { i }, { messageId: `m-${i}` })));
  for (const [i, d] of out.entries()) {
    assert.equal(d.copyId, 'a');
    assert.equal(d.reply.messageId, `m-${i}`, 'each answer reaches its own delivery');
    assert.equal(d.attempts, 1);
  }
  assert.equal(a.seen.length - before, 50);
  assert.equal(a.streams, 1, 'one stream for every delivery');
  assert.equal(a.unary, 0, 'no unary Deliver');
});

test('an unanswered attempt gives up after attemptTimeoutMs and is retried with the same id; its late answer is ignored', async () => {
  a.next.push('silent');
  const before = a.seen.length;
  const d = await routing.deliver<{ copy: string; messageId: string }>('app', 'k', { x: 1 }, { messageId: 'slow-1' });
  assert.equal(d.attempts, 2, 'the first attempt timed out, the second was answered');
  assert.deepEqual(a.seen.slice(before).map((r) => r.messageId), ['slow-1', 'slow-1'], 'retried with the same message id');
  a.release();
  // The late answer must not disturb later deliveries on the same stream.
  const e = await routing.deliver<{ messageId: string }>('app', 'k', { x: 2 }, { messageId: 'after-late' });
  assert.equal(e.reply.messageId, 'after-late');
  assert.equal(a.streams, 1, 'still the one stream');
});

test('NOT_ACTIVE from the old active: retried at the new route with the same message id', async () => {
  // a refuses until the route moves (the client retries it a few times meanwhile: no new route yet).
  a.next.push(...new Array<Answer>(10_000).fill('not-active'));
  const p = routing.deliver<{ copy: string; messageId: string }>('app', 'k', { x: 3 }, { messageId: 'moved-1' });
  await waitFor(() => a.seen.some((r) => r.messageId === 'moved-1'), { what: 'first attempt reached a' });
  ctl.moveTo(b);
  const d = await p;
  assert.equal(d.copyId, 'b');
  assert.equal(d.reply.messageId, 'moved-1');
  assert.ok(d.attempts >= 2);
  assert.deepEqual(b.seen.map((r) => r.messageId), ['moved-1']);
  assert.equal(b.unary, 0);
  a.next.length = 0;
});
