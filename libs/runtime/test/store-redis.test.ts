/**
 * The Redis adapter against a real redis-server: the store contract, plus failure
 * behaviour (fail fast while Redis is down or hung, recover when it is back).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { startRedis, type RedisHandle } from '../../../test/harness/redis';
import { isRetryable, StoreUnavailableError } from '../src/errors';
import { openStore } from '../src/store/open';
import { RedisStore } from '../src/store/redis';
import { storeContract } from './store-contract';
import { timed, waitFor } from './util';

let redis: RedisHandle;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

// One server for the whole contract; each test gets its own key prefix, so tests never
// see each other's keys.
storeContract('redis', async () => ({
  store: await RedisStore.connect({ url: redis.url, keyPrefix: `test:${randomUUID()}:` }),
  cleanup: async () => undefined,
}));

describe('redis adapter: failure behaviour', () => {
  test('openStore picks Redis when a URL is given, with the default key prefix', async () => {
    const store = await openStore({ redisUrl: redis.url });
    try {
      assert.equal(store.kind, 'redis');
      const n = await store.incr(`probe-${randomUUID()}`);
      assert.equal(n, 1);
    } finally {
      await store.close();
    }
  });

  test('while Redis is down calls fail fast with StoreUnavailableError; after it is back the store works', async () => {
    const own = await startRedis();
    const store = await RedisStore.connect({ url: own.url, commandTimeoutMs: 1000 });
    try {
      assert.equal(await store.incr('n'), 1);
      await own.stop();

      const down = await timed(() => store.get('n'));
      assert.ok(down.error instanceof StoreUnavailableError, `got ${String(down.error)}`);
      assert.equal(isRetryable(down.error), true);
      assert.ok(down.ms < 500, `failed in ${down.ms.toFixed(0)} ms; must not wait for a reconnect`);
      const write = await timed(() => store.putAtEpoch('k', 1, Buffer.from('x')));
      assert.ok(write.error instanceof StoreUnavailableError, `got ${String(write.error)}`);
      assert.ok(write.ms < 500, `write failed in ${write.ms.toFixed(0)} ms`);

      const back = await startRedis({ port: own.port });
      try {
        // The client reconnects in the background; wait for that, with a deadline.
        await waitFor(() => store.incr('after').then(() => true), { what: 'store usable after redis restart', timeoutMs: 10_000 });
        await store.putAtEpoch('k', 1, Buffer.from('x'));
        assert.equal((await store.getAtEpoch('k'))?.epoch, 1);
      } finally {
        await back.stop();
      }
    } finally {
      await store.close();
      await own.stop();
    }
  });

  test('a hung Redis (SIGSTOP) fails calls within the command timeout; SIGCONT recovers', async () => {
    const own = await startRedis();
    const store = await RedisStore.connect({ url: own.url, commandTimeoutMs: 300 });
    try {
      await store.putAtEpoch('k', 1, Buffer.from('before'));
      own.kill('SIGSTOP');
      const hung = await timed(() => store.getAtEpoch('k'));
      assert.ok(hung.error instanceof StoreUnavailableError, `got ${String(hung.error)}`);
      assert.ok(hung.ms >= 250 && hung.ms < 2000, `failed after ${hung.ms.toFixed(0)} ms, expected about 300`);
      own.kill('SIGCONT');
      const got = await waitFor(async () => (await store.getAtEpoch('k')) ?? undefined, { what: 'read after SIGCONT' });
      assert.deepEqual(Buffer.from(got.value), Buffer.from('before'));
    } finally {
      own.kill('SIGCONT');
      await store.close();
      await own.stop();
    }
  });

  test('connecting to an unreachable Redis fails with StoreUnavailableError within startupTimeoutMs', async () => {
    const own = await startRedis();
    await own.stop(); // a port that was just free and now has nobody listening
    const res = await timed(() => RedisStore.connect({ url: own.url, startupTimeoutMs: 300 }));
    assert.ok(res.error instanceof StoreUnavailableError, `got ${String(res.error)}`);
    assert.ok(res.ms < 2000, `took ${res.ms.toFixed(0)} ms`);
  });

  test('a malformed URL is refused with a clear message', async () => {
    await assert.rejects(RedisStore.connect({ url: 'localhost:6379' }), /expected redis:\/\/host:port/);
  });
});
