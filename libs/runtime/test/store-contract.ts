/**
 * The store contract: one suite, run against every adapter (store-redis.test.ts,
 * store-embedded.test.ts). Anything an Understudy component relies on about the store
 * belongs here, so both adapters are held to it.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { FailedPreconditionError, FencedError, InvalidArgumentError, StaleEpochError } from '../src/errors';
import type { Store } from '../src/store/port';
import { waitFor } from './util';

/** Creates a fresh, empty store for one test (own key prefix or own data dir). */
export type StoreFactory = () => Promise<{ store: Store; cleanup(): Promise<void> }>;

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Register the contract tests for one adapter. */
export function storeContract(adapter: Store['kind'], factory: StoreFactory, variant = ''): void {
  describe(`store contract: ${adapter}${variant ? ` (${variant})` : ''}`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await factory());
    });
    afterEach(async () => {
      await store.close();
      await cleanup();
    });

    test('kind names the adapter', () => {
      assert.equal(store.kind, adapter);
    });

    describe('leases', () => {
      test('acquire a free lease: holder, data, a positive token, and the TTL', async () => {
        const lease = await store.acquireLease('ctl', 'a', 'host-a:7000', 5000);
        assert.ok(lease);
        assert.equal(lease.holderId, 'a');
        assert.equal(lease.holderData, 'host-a:7000');
        assert.ok(Number.isSafeInteger(lease.token) && lease.token >= 1, `token ${lease.token}`);
        assert.ok(lease.ttlRemainingMs > 0 && lease.ttlRemainingMs <= 5000);
        const read = await store.readLease('ctl');
        assert.ok(read);
        assert.deepEqual({ ...read, ttlRemainingMs: 0 }, { holderId: 'a', holderData: 'host-a:7000', token: lease.token, ttlRemainingMs: 0 });
        assert.ok(read.ttlRemainingMs > 0 && read.ttlRemainingMs <= 5000, `ttl ${read.ttlRemainingMs}`);
      });

      test('a second holder is refused while the lease is held', async () => {
        const a = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(a);
        assert.equal(await store.acquireLease('ctl', 'b', 'B', 5000), null);
        const read = await store.readLease('ctl');
        assert.equal(read?.holderId, 'a');
        assert.equal(read?.token, a.token);
      });

      test('re-acquiring by the holder renews without changing the token, and updates its data', async () => {
        const first = await store.acquireLease('ctl', 'a', 'old', 5000);
        const again = await store.acquireLease('ctl', 'a', 'new', 5000);
        assert.ok(first && again);
        assert.equal(again.token, first.token);
        assert.equal((await store.readLease('ctl'))?.holderData, 'new');
      });

      test('renew extends a held lease; wrong token or holder is refused', async () => {
        const lease = await store.acquireLease('ctl', 'a', 'A', 1000);
        assert.ok(lease);
        assert.equal(await store.renewLease('ctl', 'a', lease.token + 1, 60_000), false);
        assert.equal(await store.renewLease('ctl', 'b', lease.token, 60_000), false);
        assert.ok(((await store.readLease('ctl'))?.ttlRemainingMs ?? Infinity) <= 1000, 'refused renewals must not extend');
        assert.equal(await store.renewLease('ctl', 'a', lease.token, 60_000), true);
        const ttl = (await store.readLease('ctl'))?.ttlRemainingMs ?? 0;
        assert.ok(ttl > 1000 && ttl <= 60_000, `ttl after renew ${ttl}`);
      });

      test('renewing a lease nobody holds is refused', async () => {
        assert.equal(await store.renewLease('nobody', 'a', 1, 1000), false);
        assert.equal(await store.readLease('nobody'), null);
      });

      test('a lease expires after its TTL; then another holder gets a higher token', async () => {
        const a = await store.acquireLease('ctl', 'a', 'A', 80);
        assert.ok(a);
        await waitFor(async () => (await store.readLease('ctl')) === null, { what: 'lease expiry', timeoutMs: 5000 });
        assert.equal(await store.renewLease('ctl', 'a', a.token, 1000), false, 'an expired lease cannot be renewed');
        const b = await store.acquireLease('ctl', 'b', 'B', 5000);
        assert.ok(b);
        assert.ok(b.token > a.token, `${b.token} > ${a.token}`);
      });

      test('the token strictly increases every time the lease changes hands', async () => {
        const tokens: number[] = [];
        for (const holder of ['a', 'b', 'a', 'c']) {
          const l = await store.acquireLease('ctl', holder, holder, 5000);
          assert.ok(l, `acquire by ${holder}`);
          tokens.push(l.token);
          await store.releaseLease('ctl', holder, l.token);
        }
        for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, `tokens ${tokens.join(',')}`);
      });

      test('tokens of different leases are independent', async () => {
        const x = await store.acquireLease('x', 'a', '', 5000);
        const y = await store.acquireLease('y', 'a', '', 5000);
        assert.equal(x?.token, 1);
        assert.equal(y?.token, 1);
      });

      test('release frees the lease; a wrong token or holder does not', async () => {
        const lease = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(lease);
        await store.releaseLease('ctl', 'a', lease.token + 1);
        await store.releaseLease('ctl', 'b', lease.token);
        assert.equal((await store.readLease('ctl'))?.holderId, 'a');
        await store.releaseLease('ctl', 'a', lease.token);
        assert.equal(await store.readLease('ctl'), null);
        assert.equal(await store.renewLease('ctl', 'a', lease.token, 1000), false);
        await store.releaseLease('ctl', 'a', lease.token); // releasing again is a no-op
        const b = await store.acquireLease('ctl', 'b', 'B', 5000);
        assert.ok(b && b.token > lease.token);
      });

      test('concurrent acquires: exactly one holder wins', async () => {
        const results = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((h) => store.acquireLease('race', h, h, 5000)));
        const winners = results.filter((r) => r !== null);
        assert.equal(winners.length, 1);
        assert.equal((await store.readLease('race'))?.holderId, winners[0]!.holderId);
      });
    });

    describe('fenced writes', () => {
      test('accepted with the current token', async () => {
        const lease = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(lease);
        await store.putFenced('state', bytes('v1'), 'ctl', lease.token);
        assert.deepEqual(Buffer.from((await store.get('state'))!), Buffer.from('v1'));
      });

      test('rejected with a stale token after another holder took the lease', async () => {
        const a = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(a);
        await store.putFenced('state', bytes('from-a'), 'ctl', a.token);
        await store.releaseLease('ctl', 'a', a.token);
        const b = await store.acquireLease('ctl', 'b', 'B', 5000);
        assert.ok(b);
        await assert.rejects(store.putFenced('state', bytes('late-a'), 'ctl', a.token), (e: unknown) => {
          assert.ok(e instanceof FencedError, `got ${String(e)}`);
          assert.equal(e.retryable, false);
          return true;
        });
        assert.deepEqual(Buffer.from((await store.get('state'))!), Buffer.from('from-a'), 'the refused write must not land');
        await store.putFenced('state', bytes('from-b'), 'ctl', b.token);
        assert.deepEqual(Buffer.from((await store.get('state'))!), Buffer.from('from-b'));
      });

      test('rejected when the lease expired, even with the last token', async () => {
        const a = await store.acquireLease('ctl', 'a', 'A', 60);
        assert.ok(a);
        await waitFor(async () => (await store.readLease('ctl')) === null, { what: 'lease expiry' });
        await assert.rejects(store.putFenced('state', bytes('x'), 'ctl', a.token), FencedError);
        assert.equal(await store.get('state'), null);
      });

      test('rejected when nobody ever held the lease', async () => {
        await assert.rejects(store.putFenced('state', bytes('x'), 'never', 1), FencedError);
      });
    });

    describe('epoch-fenced writes', () => {
      test('a stale epoch is refused; equal and higher are accepted', async () => {
        await store.putAtEpoch('ckpt', 5, bytes('e5'));
        await assert.rejects(store.putAtEpoch('ckpt', 4, bytes('e4')), (e: unknown) => {
          assert.ok(e instanceof StaleEpochError, `got ${String(e)}`);
          assert.match(e.message, /epoch 4 is below the stored epoch 5/);
          return true;
        });
        assert.deepEqual(await store.getAtEpoch('ckpt'), { epoch: 5, value: Buffer.from('e5') });
        await store.putAtEpoch('ckpt', 5, bytes('e5b'));
        assert.deepEqual(await store.getAtEpoch('ckpt'), { epoch: 5, value: Buffer.from('e5b') });
        await store.putAtEpoch('ckpt', 9, bytes('e9'));
        const got = await store.getAtEpoch('ckpt');
        assert.equal(got?.epoch, 9);
        assert.deepEqual(Buffer.from(got!.value), Buffer.from('e9'));
      });

      test('fenceAndGet raises the epoch and returns the value; older writers are refused afterwards', async () => {
        await store.putAtEpoch('ckpt', 3, bytes('at-3'));
        const got = await store.fenceAndGet('ckpt', 4);
        assert.deepEqual(got, { epoch: 4, value: Buffer.from('at-3') });
        // The race the fence closes: the old holder (epoch 3) writes after the new one read.
        await assert.rejects(store.putAtEpoch('ckpt', 3, bytes('late-3')), (e: unknown) => {
          assert.ok(e instanceof StaleEpochError, `got ${String(e)}`);
          assert.match(e.message, /epoch 3 is below the stored epoch 4/);
          return true;
        });
        assert.deepEqual(await store.getAtEpoch('ckpt'), { epoch: 4, value: Buffer.from('at-3') }, 'the refused write must not land');
        await store.putAtEpoch('ckpt', 4, bytes('at-4'));
        assert.deepEqual(await store.getAtEpoch('ckpt'), { epoch: 4, value: Buffer.from('at-4') });
      });

      test('fenceAndGet of a missing key returns null but still fences it', async () => {
        assert.equal(await store.fenceAndGet('fresh', 2), null);
        assert.equal(await store.getAtEpoch('fresh'), null, 'a fenced key without a value reads as null');
        await assert.rejects(store.putAtEpoch('fresh', 1, bytes('old')), StaleEpochError);
        assert.equal(await store.fenceAndGet('fresh', 2), null, 'fencing again at the same epoch is idempotent');
        await store.putAtEpoch('fresh', 2, bytes('new'));
        assert.deepEqual(await store.fenceAndGet('fresh', 2), { epoch: 2, value: Buffer.from('new') });
      });

      test('fenceAndGet below the stored epoch is refused and changes nothing', async () => {
        await store.putAtEpoch('ckpt', 5, bytes('e5'));
        await assert.rejects(store.fenceAndGet('ckpt', 4), (e: unknown) => {
          assert.ok(e instanceof StaleEpochError, `got ${String(e)}`);
          assert.match(e.message, /epoch 4 is below the stored epoch 5/);
          return true;
        });
        assert.deepEqual(await store.fenceAndGet('ckpt', 5), { epoch: 5, value: Buffer.from('e5') });
      });

      test('concurrent writes at the old epoch and a fence: every write the fence did not see is refused', async () => {
        await store.putAtEpoch('race', 1, bytes('0'));
        const writes = Array.from({ length: 20 }, (_, i) => store.putAtEpoch('race', 1, bytes(String(i + 1))).then(() => i + 1, () => -1));
        const fence = store.fenceAndGet('race', 2);
        const more = Array.from({ length: 20 }, (_, i) => store.putAtEpoch('race', 1, bytes(String(i + 21))).then(() => i + 21, () => -1));
        const [seen, accepted] = await Promise.all([fence, Promise.all([...writes, ...more])]);
        const last = Math.max(...accepted);
        assert.ok(seen, 'the fence reads a value');
        assert.equal(Buffer.from(seen.value).toString(), String(last), 'the fence saw the last accepted write');
        assert.deepEqual(Buffer.from((await store.getAtEpoch('race'))!.value).toString(), String(last));
      });

      test('fenceAndGet on a plain key is refused; del removes a fence', async () => {
        await store.incr('plain');
        await assert.rejects(store.fenceAndGet('plain', 1), FailedPreconditionError);
        await store.fenceAndGet('fenced', 9);
        await store.del('fenced');
        await store.putAtEpoch('fenced', 1, bytes('after delete'));
        assert.equal((await store.getAtEpoch('fenced'))?.epoch, 1);
      });

      test('epoch 0 is a valid first epoch and a missing key reads as null', async () => {
        assert.equal(await store.getAtEpoch('nothing'), null);
        await store.putAtEpoch('zero', 0, bytes('z'));
        assert.equal((await store.getAtEpoch('zero'))?.epoch, 0);
      });
    });

    describe('counters', () => {
      test('incr starts at 1 and counts up per key', async () => {
        assert.equal(await store.incr('epoch:app'), 1);
        assert.equal(await store.incr('epoch:app'), 2);
        assert.equal(await store.incr('epoch:other'), 1);
        assert.equal(await store.incr('epoch:app'), 3);
        assert.deepEqual(Buffer.from((await store.get('epoch:app'))!), Buffer.from('3'), 'a counter reads back as its decimal text');
      });

      test('concurrent incr calls each get a distinct value', async () => {
        const values = await Promise.all(Array.from({ length: 25 }, () => store.incr('n')));
        assert.deepEqual([...values].sort((x, y) => x - y), Array.from({ length: 25 }, (_, i) => i + 1));
      });
    });

    describe('values', () => {
      test('binary values round-trip exactly (all byte values, empty)', async () => {
        const all = Uint8Array.from({ length: 256 }, (_, i) => i);
        const lease = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(lease);
        await store.putFenced('bin', all, 'ctl', lease.token);
        assert.deepEqual(Buffer.from((await store.get('bin'))!), Buffer.from(all));
        await store.putFenced('empty', new Uint8Array(0), 'ctl', lease.token);
        assert.equal((await store.get('empty'))?.length, 0);
        await store.putAtEpoch('bin-epoch', 3, all);
        assert.deepEqual(Buffer.from((await store.getAtEpoch('bin-epoch'))!.value), Buffer.from(all));
      });

      test('a returned value is a copy: mutating it does not change the store', async () => {
        await store.putAtEpoch('k', 1, bytes('abc'));
        const got = await store.getAtEpoch('k');
        got!.value[0] = 0x7a;
        assert.deepEqual(Buffer.from((await store.getAtEpoch('k'))!.value), Buffer.from('abc'));
      });

      test('a missing key reads as null', async () => {
        assert.equal(await store.get('missing'), null);
      });

      test('del removes plain, epoch and counter keys; deleting a missing key is a no-op', async () => {
        const lease = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(lease);
        await store.putFenced('plain', bytes('p'), 'ctl', lease.token);
        await store.putAtEpoch('ep', 7, bytes('e'));
        await store.incr('cnt');
        for (const k of ['plain', 'ep', 'cnt', 'missing']) await store.del(k);
        assert.equal(await store.get('plain'), null);
        assert.equal(await store.getAtEpoch('ep'), null);
        assert.equal(await store.incr('cnt'), 1, 'a deleted counter starts again at 1');
        await store.putAtEpoch('ep', 1, bytes('lower epoch after delete'));
        assert.equal((await store.getAtEpoch('ep'))?.epoch, 1);
      });

      test('del does not touch leases or their token counters', async () => {
        const a = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(a);
        await store.del('ctl');
        assert.equal((await store.readLease('ctl'))?.token, a.token);
      });
    });

    describe('misuse', () => {
      test('mixing kinds on one key is refused with FailedPreconditionError', async () => {
        await store.putAtEpoch('ep', 1, bytes('e'));
        await assert.rejects(store.get('ep'), FailedPreconditionError);
        await assert.rejects(store.incr('ep'), FailedPreconditionError);
        const lease = await store.acquireLease('ctl', 'a', 'A', 5000);
        assert.ok(lease);
        await store.putFenced('plain', bytes('not a number'), 'ctl', lease.token);
        await assert.rejects(store.getAtEpoch('plain'), FailedPreconditionError);
        await assert.rejects(store.putAtEpoch('plain', 1, bytes('x')), FailedPreconditionError);
        await assert.rejects(store.incr('plain'), (e: unknown) => e instanceof FailedPreconditionError && /integer/.test(e.message));
      });

      test('invalid arguments are refused with InvalidArgumentError', async () => {
        await assert.rejects(store.acquireLease('ctl', 'a', 'A', 0), InvalidArgumentError);
        await assert.rejects(store.acquireLease('ctl', '', 'A', 100), InvalidArgumentError);
        await assert.rejects(store.acquireLease('', 'a', 'A', 100), InvalidArgumentError);
        await assert.rejects(store.renewLease('ctl', 'a', 1.5, 100), InvalidArgumentError);
        await assert.rejects(store.putAtEpoch('k', -1, bytes('x')), InvalidArgumentError);
        await assert.rejects(store.fenceAndGet('k', 1.5), InvalidArgumentError);
        await assert.rejects(store.fenceAndGet('', 1), InvalidArgumentError);
        await assert.rejects(store.putAtEpoch('k', 1, 'text' as unknown as Uint8Array), InvalidArgumentError);
        await assert.rejects(store.get(''), InvalidArgumentError);
        assert.equal(await store.readLease('ctl'), null, 'refused calls have no effect');
      });

      test('a closed store refuses calls; close is idempotent', async () => {
        await store.close();
        await store.close();
        await assert.rejects(store.get('k'), FailedPreconditionError);
        await assert.rejects(store.incr('k'), FailedPreconditionError);
      });
    });
  });
}
