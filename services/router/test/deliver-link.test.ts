/**
 * The router's link to a copy (libs/adsm `DeliverLink`: gRPC framing written straight on
 * node:http2, many requests per write) against a real grpc-js server serving the generated
 * AdsmService definition: what the server decodes is exactly what was sent, in order; answers
 * (OK or a status with understudy-* metadata) come back typed and matched; frames split across
 * HTTP/2 DATA frames are reassembled; a server that goes away fails what is waiting as broken.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { DeliverLink, streamBatchMetadata, takesBatches } from '@understudy/adsm';
import { AdsmServiceService, type DeliverRequest, type DeliverResponse, type DeliverStreamRequest, type DeliverStreamResponse } from '@understudy/proto';
import { NotActiveError, NotFoundError, UnavailableError, silentLogger, startGrpcServer, toServiceError, type GrpcServer } from '@understudy/runtime';
import { waitFor } from '../../../test/harness/wait';

interface Answer {
  readonly tag: number;
  readonly err: Error | null;
  readonly res: DeliverResponse | undefined;
  readonly broken: boolean;
}

/**
 * A stub copy: records every request; answers by the payload's first byte ('!' = error, '.' =
 * hold). With `batching` it says it takes STREAM_BATCH (as a real copy does) and answers the
 * items of one message in one message when the client asked for that.
 */
class StubCopy {
  readonly received: DeliverRequest[] = [];
  readonly held: (() => void)[] = [];
  /** Request messages received (a batch is one). */
  messages = 0;
  server!: GrpcServer;

  constructor(private readonly batching = false) {}

  async start(): Promise<string> {
    const deliverStream = (call: grpc.ServerDuplexStream<DeliverStreamRequest, DeliverStreamResponse>): void => {
      const batchAnswers = this.batching && takesBatches(call.metadata);
      if (this.batching) call.sendMetadata(streamBatchMetadata());
      call.on('data', (msg: DeliverStreamRequest) => {
        this.messages++;
        // Answers made while this message is handled go out together (batched answers).
        let out: DeliverStreamResponse[] | null = [];
        for (const m of msg.request ? [msg, ...msg.more] : msg.more) {
          const r = m.request!;
          this.received.push(r);
          const answer = (): void => {
            let a: DeliverStreamResponse;
            if (r.payload[0] === 0x21) {
              const wire = toServiceError(r.rs === 1 ? new NotActiveError('copy c9 is STANDBY') : new NotFoundError('no such app'));
              const md: Record<string, string> = {};
              for (const [k, v] of Object.entries(wire.metadata.getMap())) md[k] = String(v);
              a = { correlationId: m.correlationId, response: undefined, statusCode: wire.code, statusMessage: wire.details, statusMetadata: md, more: [] };
            } else {
              // The reply echoes the payload (large payloads make large replies: split frames).
              a = { correlationId: m.correlationId, response: { reply: r.payload, epoch: r.routeEpoch, duplicate: false, copyId: 'c9' }, statusCode: 0, statusMessage: '', statusMetadata: {}, more: [] };
            }
            if (batchAnswers && out !== null) out.push(a);
            else call.write(a);
          };
          if (r.payload[0] === 0x2e) this.held.push(answer);
          else answer();
        }
        const batch = out;
        out = null;
        if (batch.length > 0) call.write({ ...batch[0]!, more: batch.slice(1) });
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    };
    this.server = await startGrpcServer({
      address: '127.0.0.1:0',
      services: [{ definition: AdsmServiceService, implementation: { deliverStream } as never }],
      logger: silentLogger(),
    });
    return `127.0.0.1:${this.server.port}`;
  }
}

function link(address: string): { l: DeliverLink<number>; answers: Answer[] } {
  const answers: Answer[] = [];
  const l = new DeliverLink<number>(address, (tag, err, res, broken) => answers.push({ tag, err, res, broken }));
  return { l, answers };
}

const until = (cond: () => boolean, what: string): Promise<true> => waitFor(() => cond(), { what, intervalMs: 5 });

describe('DeliverLink against a grpc-js AdsmService', () => {
  const copy = new StubCopy();
  let address = '';
  before(async () => {
    address = await copy.start();
  });
  after(async () => {
    await copy.server.shutdown(100);
  });

  test('requests arrive exactly as sent and in order; answers come back matched', async () => {
    const { l, answers } = link(address);
    const reqs: DeliverRequest[] = [
      { app: 'counter', rs: 0, messageId: 'm-0', payload: Buffer.from('{"key":"a"}'), key: 'a', routeEpoch: 0 },
      { app: 'äpp-漢字', rs: 127, messageId: 'x'.repeat(256), payload: Buffer.alloc(70_000, 7), key: 'kéy', routeEpoch: 2 ** 40 + 5 },
      { app: '', rs: 128, messageId: '', payload: Buffer.alloc(0), key: '', routeEpoch: 16_384 },
      ...Array.from({ length: 2000 }, (_, i) => ({ app: 'counter', rs: i % 300, messageId: `id-${i}`, payload: Buffer.from(`{"n":${i}}`), key: `k${i}`, routeEpoch: i })),
      // Larger than one 64 KiB write chunk, and its reply larger than one HTTP/2 DATA frame.
      { app: 'counter', rs: 5, messageId: 'big', payload: Buffer.alloc(300_000, 0x41), key: 'big', routeEpoch: 3 },
    ];
    reqs.forEach((r, i) => l.send(r, i));
    await until(() => answers.length === reqs.length, 'every answer');
    assert.deepEqual(copy.received.map((r) => ({ ...r, payload: Buffer.from(r.payload) })), reqs.map((r) => ({ ...r, payload: Buffer.from(r.payload) })));
    for (const a of answers) {
      assert.equal(a.err, null);
      assert.equal(a.broken, false);
      assert.ok(Buffer.from(a.res!.reply).equals(Buffer.from(reqs[a.tag]!.payload)), `reply of request ${a.tag}`);
      assert.equal(a.res!.epoch, reqs[a.tag]!.routeEpoch);
    }
    assert.equal(l.inFlight, 0);
    l.close();
  });

  test('STREAM_BATCH: once the copy said it takes batches, the requests of one turn go in one message; batched answers are matched', async () => {
    const batching = new StubCopy(true);
    const at = await batching.start();
    try {
      const { l, answers } = link(at);
      // The first request goes before the copy's headers are known: on its own.
      l.send({ app: 'counter', rs: 0, messageId: 'first', payload: Buffer.from('{}'), key: 'a', routeEpoch: 1 }, -1);
      await until(() => answers.length === 1, 'the first answer');
      assert.equal(batching.messages, 1);
      const reqs: DeliverRequest[] = [
        ...Array.from({ length: 3000 }, (_, i) => ({ app: 'counter', rs: i % 300, messageId: `id-${i}`, payload: Buffer.from(`{"n":${i}}`), key: `k${i}`, routeEpoch: i })),
        { app: 'counter', rs: 1, messageId: 'na', payload: Buffer.from('!'), key: '', routeEpoch: 1 },
        // Larger than one 64 KiB write chunk: a frame of its own.
        { app: 'counter', rs: 5, messageId: 'big', payload: Buffer.alloc(300_000, 0x41), key: 'big', routeEpoch: 3 },
        { app: 'äpp-漢字', rs: 127, messageId: 'x'.repeat(256), payload: Buffer.alloc(0), key: 'kéy', routeEpoch: 2 ** 40 + 5 },
      ];
      reqs.forEach((r, i) => l.send(r, i));
      await until(() => answers.length === reqs.length + 1, 'every answer');
      assert.deepEqual(
        batching.received.slice(1).map((r) => ({ ...r, payload: Buffer.from(r.payload) })),
        reqs.map((r) => ({ ...r, payload: Buffer.from(r.payload) })),
        'every request arrived as sent, in order',
      );
      assert.ok(batching.messages < 20, `${reqs.length} requests in ${batching.messages - 1} messages`);
      for (const a of answers.slice(1)) {
        const r = reqs[a.tag]!;
        if (r.messageId === 'na') {
          assert.ok(a.err instanceof NotActiveError, String(a.err));
          continue;
        }
        assert.equal(a.err, null, `request ${a.tag}`);
        assert.ok(Buffer.from(a.res!.reply).equals(Buffer.from(r.payload)), `reply of request ${a.tag}`);
        assert.equal(a.res!.epoch, r.routeEpoch);
      }
      assert.equal(new Set(answers.map((a) => a.tag)).size, answers.length, 'each answered once');
      l.close();
    } finally {
      await batching.server.shutdown(100);
    }
  });

  test('status answers become typed errors (not broken); forgotten requests are not answered', async () => {
    copy.received.length = 0;
    const { l, answers } = link(address);
    l.send({ app: 'counter', rs: 1, messageId: 'na', payload: Buffer.from('!'), key: '', routeEpoch: 1 }, 1);
    l.send({ app: 'counter', rs: 2, messageId: 'nf', payload: Buffer.from('!'), key: '', routeEpoch: 1 }, 2);
    const forgotten = l.send({ app: 'counter', rs: 3, messageId: 'fg', payload: Buffer.from('ok'), key: '', routeEpoch: 1 }, 3);
    l.forget(forgotten);
    l.send({ app: 'counter', rs: 4, messageId: 'ok', payload: Buffer.from('ok'), key: '', routeEpoch: 1 }, 4);
    await until(() => answers.length === 3, 'three answers');
    const by = new Map(answers.map((a) => [a.tag, a]));
    assert.ok(by.get(1)!.err instanceof NotActiveError, String(by.get(1)!.err));
    assert.equal(by.get(1)!.broken, false);
    assert.ok(by.get(2)!.err instanceof NotFoundError, String(by.get(2)!.err));
    assert.equal(by.get(4)!.err, null);
    assert.equal(by.has(3), false);
    l.close();
  });

  test('reset and a vanished server fail what is waiting as broken; the next send reconnects', async () => {
    const { l, answers } = link(address);
    l.send({ app: 'counter', rs: 0, messageId: 'held-1', payload: Buffer.from('.'), key: '', routeEpoch: 0 }, 1);
    await until(() => copy.held.length === 1, 'the held request at the server');
    l.reset('test');
    await until(() => answers.length === 1, 'the reset answer');
    assert.ok(answers[0]!.err instanceof UnavailableError);
    assert.equal(answers[0]!.broken, true);
    l.send({ app: 'counter', rs: 0, messageId: 'after-reset', payload: Buffer.from('ok'), key: '', routeEpoch: 0 }, 2);
    await until(() => answers.length === 2, 'an answer on a new connection');
    assert.equal(answers[1]!.err, null);

    // A second server that dies with a request in flight.
    const doomed = new StubCopy();
    const a2 = await doomed.start();
    const { l: l2, answers: ans2 } = link(a2);
    l2.send({ app: 'counter', rs: 0, messageId: 'held-2', payload: Buffer.from('.'), key: '', routeEpoch: 0 }, 7);
    await until(() => doomed.held.length === 1, 'the held request at the doomed server');
    await doomed.server.shutdown(0);
    await until(() => ans2.length === 1, 'the broken answer');
    assert.equal(ans2[0]!.broken, true);
    assert.ok(ans2[0]!.err instanceof UnavailableError);
    // Nobody listens there any more: refused at once, as broken.
    l2.send({ app: 'counter', rs: 0, messageId: 'refused', payload: Buffer.from('ok'), key: '', routeEpoch: 0 }, 8);
    await until(() => ans2.length === 2, 'the refused answer');
    assert.equal(ans2[1]!.broken, true);
    l2.close();
    // An address http2 cannot even parse is as unreachable as a refused connection.
    const { l: l3, answers: ans3 } = link('not an address');
    l3.send({ app: 'counter', rs: 0, messageId: 'nowhere', payload: Buffer.from('ok'), key: '', routeEpoch: 0 }, 9);
    await until(() => ans3.length === 1, 'the answer for a bad address');
    assert.equal(ans3[0]!.broken, true);
    assert.ok(ans3[0]!.err instanceof UnavailableError);
    l3.close();
    l.close();
    for (const h of copy.held.splice(0)) h();
  });
});
