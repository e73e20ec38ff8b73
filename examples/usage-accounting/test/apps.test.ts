/**
 * Unit tests of the usage-accounting pieces that need no cluster: the four handlers (pure), the
 * billing sinks (a real directory, a real redis-server) and the record generator. The pipeline
 * end to end, with failures, is test/e2e/usage-accounting.test.ts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { HandleContext } from '@understudy/adsm';
import { Redis } from 'ioredis';
import { startRedis, type RedisHandle } from '../../../test/harness/redis';
import { aggregatorApp } from '../src/aggregator';
import { collectorApp } from '../src/collector';
import { ENHANCER_RANGE_STARTS, MASTER_RS, enhancerApp, type EnhancerState } from '../src/enhancer';
import { usageRecord } from '../src/load';
import { makeOutputApp, type LedgerEntry, type OutputState } from '../src/output';
import { DEFAULT_RATES, validateUsage, type BillingRecord } from '../src/records';
import { FileSink, RedisStreamSink, readBillingFiles } from '../src/sink';

function ctx<S>(o: Partial<HandleContext<S>> = {}): HandleContext<S> {
  return { app: 'x', rs: 1, epoch: 1, messageId: 'm', key: 'k', shared: undefined, sharedSeq: 0, ...o };
}

const record = { recordId: 'r-1', subscriber: 'sub-0042', service: 'sms' as const, units: 3 };

describe('collector', () => {
  test('accepts a valid record, counts it and forwards it to the aggregator', () => {
    const h = collectorApp.handler;
    const r = h.handle(h.init(0), record, ctx());
    assert.deepEqual(r.send, [{ app: 'aggregator', payload: record }]);
    const s = r.updates!.reduce(h.apply, h.init(0));
    assert.deepEqual(s.sms, { records: 1, units: 3 });
  });

  test('refuses malformed records with a message naming the problem', () => {
    const cases: [unknown, RegExp][] = [
      [null, /JSON object/],
      [{ ...record, recordId: '' }, /recordId/],
      [{ ...record, subscriber: 'bob' }, /subscriber/],
      [{ ...record, service: 'fax' }, /service must be one of/],
      [{ ...record, units: 0 }, /units/],
      [{ ...record, units: 1.5 }, /units/],
      [{ ...record, extra: 1 }, /unknown field "extra"/],
    ];
    for (const [m, re] of cases) assert.throws(() => collectorApp.handler.handle(collectorApp.handler.init(0), m as never, ctx()), re);
    assert.deepEqual(validateUsage(record), record);
  });
});

describe('aggregator', () => {
  test('per-subscriber totals; forwards each record to the enhancer', () => {
    const h = aggregatorApp.handler;
    let s = h.init(0);
    for (const units of [3, 4]) {
      const r = h.handle(s, { ...record, units }, ctx());
      assert.deepEqual(r.send, [{ app: 'enhancer', payload: { ...record, units } }]);
      s = r.updates!.reduce(h.apply, s);
    }
    assert.deepEqual(h.query!(s, { subscriber: 'sub-0042' }), { subscribers: 1, records: 2, units: 7 });
    assert.deepEqual(h.query!(s, {}), { subscribers: 1, records: 2, units: 7 });
  });
});

describe('enhancer', () => {
  const h = enhancerApp.handler;
  const table: EnhancerState = { rates: { ...DEFAULT_RATES, sms: 70_000 }, priced: 0 };

  test('prices with the shared rate table and forwards the billing record to the output', () => {
    const r = h.handle(h.init(1), record, ctx({ rs: 2, shared: table, sharedSeq: 7 }));
    const billing: BillingRecord = { ...record, rateMicros: 70_000, amountMicros: 210_000, rateSeq: 7 };
    assert.deepEqual(r.send, [{ app: 'output', payload: billing }]);
  });

  test('rates are set on the master RS only, validated', () => {
    const r = h.handle(h.init(MASTER_RS), { op: 'setRate', service: 'data', rateMicros: 5 }, ctx({ rs: MASTER_RS }));
    assert.equal(r.updates!.reduce(h.apply, h.init(MASTER_RS)).rates.data, 5);
    assert.throws(() => h.handle(h.init(1), { op: 'setRate', service: 'data', rateMicros: 5 }, ctx({ rs: 1 })), /master RS/);
    assert.throws(() => h.handle(h.init(0), { op: 'setRate', service: 'data', rateMicros: -1 }, ctx({ rs: 0 })), /rateMicros/);
  });

  test('subscribers never land on the master RS of the range partitioning', () => {
    for (let n = 0; n < 2000; n++) assert.ok(usageRecord('t', n).subscriber >= ENHANCER_RANGE_STARTS[0]!);
    const firstDigits = new Set(Array.from({ length: 2000 }, (_, n) => usageRecord('t', n).subscriber[4]));
    assert.equal(firstDigits.size, 10, 'subscriber ids spread over every range');
  });
});

describe('output', () => {
  const app = makeOutputApp({ seenWindow: 3 });
  const h = app.handler;
  const bill = (id: string, units = 2): BillingRecord => ({ ...record, recordId: id, units, rateMicros: 10, amountMicros: units * 10, rateSeq: 0 });
  const run = (s: OutputState, m: Parameters<typeof h.handle>[1]): OutputState => (h.handle(s, m, ctx()).updates ?? []).reduce(h.apply, s);

  test('bills a record once by record id, keeps a ledger, drops what was exported', () => {
    let s = h.init(0);
    s = run(s, bill('a'));
    s = run(s, bill('a')); // the same record again (another message id): not billed twice
    s = run(s, bill('b', 5));
    assert.deepEqual(s.totals.sms, { records: 2, units: 7, amountMicros: 70 });
    assert.deepEqual(h.query!(s, { op: 'ledger', after: 0, limit: 10 }), { entries: [{ ...bill('a'), seq: 1 }, { ...bill('b', 5), seq: 2 }], nextSeq: 3 });
    s = run(s, { op: 'exported', upTo: 1 });
    assert.deepEqual((h.query!(s, { op: 'ledger', after: 0, limit: 10 }) as { entries: LedgerEntry[] }).entries.map((e) => e.seq), [2]);
    s = run(s, { op: 'exported', upTo: 99 }); // clamped to what exists
    assert.deepEqual(h.query!(s, { op: 'totals' }), { totals: s.totals, unexported: 0 });
  });

  test('the record-id window is bounded, and survives snapshot/restore in order', () => {
    let s = h.init(0);
    for (const id of ['a', 'b', 'c', 'd']) s = run(s, bill(id));
    assert.deepEqual([...s.seen.keys()], ['b', 'c', 'd']);
    const back = h.restore!(JSON.parse(JSON.stringify(h.snapshot!(s))));
    assert.deepEqual([...back.seen.keys()], ['b', 'c', 'd']);
    assert.deepEqual(back.totals, s.totals);
    assert.equal(back.nextSeq, 5);
  });
});

const entry = (seq: number): LedgerEntry => ({ ...record, recordId: `r-${seq}`, rateMicros: 1, amountMicros: 3, rateSeq: 0, seq });

describe('FileSink', () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'usage-sink-'))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('appends each sequence number once, recovers the cursor and cuts a torn last line', async () => {
    const a = new FileSink(dir);
    assert.equal(await a.write(0, [entry(1), entry(2)]), 2);
    assert.equal(await a.write(0, [entry(1), entry(2), entry(3)]), 3); // a replay writes only 3
    await a.close();
    fs.appendFileSync(path.join(dir, 'billing-rs0.jsonl'), '{"recordId":"torn'); // a crash mid-write
    const b = new FileSink(dir);
    assert.equal(await b.lastSeq(0), 3);
    assert.equal(await b.write(0, [entry(3), entry(4)]), 4);
    assert.deepEqual(readBillingFiles(dir).map((e) => e.seq), [1, 2, 3, 4]);
    await b.close();
    // One writer at a time: a live process holding the lock keeps others out.
    fs.writeFileSync(path.join(dir, 'writer.lock'), String(process.ppid));
    assert.throws(() => new FileSink(dir), /being written by process/);
  });
});

describe('RedisStreamSink', () => {
  let redis: RedisHandle;
  let client: Redis;
  before(async () => {
    redis = await startRedis();
    client = new Redis(redis.url);
  });
  after(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  test('appends each sequence number once per RS, whatever the writers and replays', async () => {
    const a = new RedisStreamSink(client, 't:');
    const b = new RedisStreamSink(client, 't:');
    await Promise.all([a.write(0, [entry(1), entry(2)]), b.write(0, [entry(1), entry(2), entry(3)]), a.write(1, [entry(1)])]);
    assert.equal(await b.write(0, [entry(2), entry(3), entry(4)]), 4);
    assert.equal(await a.lastSeq(0), 4);
    assert.equal(await a.lastSeq(1), 1);
    const all = await a.readAll();
    assert.deepEqual(all.map((e) => e.seq).sort(), [1, 1, 2, 3, 4]);
  });
});
