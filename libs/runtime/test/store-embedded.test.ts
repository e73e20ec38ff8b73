/**
 * The embedded adapter: the store contract on a temp data dir, plus what only it has —
 * restart from disk, a torn AOF tail, compaction, the data-dir lock and the injected clock.
 */
import assert from 'node:assert/strict';
import { appendFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { FailedPreconditionError, FencedError, StaleEpochError } from '../src/errors';
import { EmbeddedStore, embeddedStoreFiles } from '../src/store/embedded';
import { encodeRecord, Op } from '../src/store/aof';
import { openStore } from '../src/store/open';
import { storeContract } from './store-contract';
import { tempDir } from './util';

const buf = (s: string): Buffer => Buffer.from(s);

storeContract('embedded', async () => {
  const dir = await tempDir();
  return { store: await EmbeddedStore.open({ dataDir: dir.path }), cleanup: dir.remove };
}, 'data dir');

storeContract('embedded', async () => ({ store: await EmbeddedStore.open({ dataDir: null }), cleanup: async () => undefined }), 'memory only');

/** Run `fn` with a fresh temp dir, always removing it. */
async function withDir(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await fn(dir.path);
  } finally {
    await dir.remove();
  }
}

describe('embedded store: persistence', () => {
  test('a fence survives a reopen and a compaction (with and without a value)', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      await s1.putAtEpoch('ckpt', 2, buf('v2'));
      assert.deepEqual(await s1.fenceAndGet('ckpt', 3), { epoch: 3, value: buf('v2') });
      assert.equal(await s1.fenceAndGet('empty', 7), null);
      await s1.close();

      const s2 = await EmbeddedStore.open({ dataDir: path, compactAfterBytes: 1 });
      try {
        await assert.rejects(s2.putAtEpoch('ckpt', 2, buf('late')), StaleEpochError);
        await assert.rejects(s2.putAtEpoch('empty', 6, buf('late')), StaleEpochError);
        assert.deepEqual(await s2.getAtEpoch('ckpt'), { epoch: 3, value: buf('v2') });
        assert.equal(await s2.getAtEpoch('empty'), null);
        await s2.putAtEpoch('other', 1, buf('x')); // triggers a compaction (snapshot holds the fences)
      } finally {
        await s2.close();
      }
      const s3 = await EmbeddedStore.open({ dataDir: path });
      try {
        await assert.rejects(s3.putAtEpoch('empty', 6, buf('late')), StaleEpochError);
        assert.deepEqual(await s3.fenceAndGet('ckpt', 3), { epoch: 3, value: buf('v2') });
        assert.equal(await s3.fenceAndGet('empty', 7), null);
      } finally {
        await s3.close();
      }
    }));

  test('reopening after close keeps data and the lease token counter, but not leases', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      const lease = await s1.acquireLease('ctl', 'a', 'A', 60_000);
      assert.ok(lease);
      await s1.putFenced('plain', buf('p'), 'ctl', lease.token);
      await s1.putAtEpoch('ep', 4, buf('e'));
      await s1.incr('cnt');
      await s1.incr('cnt');
      await s1.putAtEpoch('gone', 1, buf('x'));
      await s1.del('gone');
      await s1.close();

      const s2 = await EmbeddedStore.open({ dataDir: path });
      try {
        assert.deepEqual(Buffer.from((await s2.get('plain'))!), buf('p'));
        assert.deepEqual(await s2.getAtEpoch('ep'), { epoch: 4, value: buf('e') });
        assert.equal(await s2.getAtEpoch('gone'), null);
        assert.equal(await s2.incr('cnt'), 3);
        assert.equal(await s2.readLease('ctl'), null, 'leases do not survive a restart');
        const next = await s2.acquireLease('ctl', 'b', 'B', 60_000);
        assert.ok(next && next.token > lease.token, `token after restart ${next?.token} > ${lease.token}`);
        await assert.rejects(s2.putFenced('plain', buf('stale'), 'ctl', lease.token), FencedError);
      } finally {
        await s2.close();
      }
    }));

  test('a torn record at the end of the AOF is dropped and the rest is kept', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      await s1.putAtEpoch('a', 1, buf('kept'));
      await s1.incr('n');
      await s1.close();
      const aof = join(path, embeddedStoreFiles.aof);
      const goodSize = (await stat(aof)).size;
      // A crash in the middle of an append: only part of the next frame reached the file.
      const frame = encodeRecord({ op: Op.SET_EPOCH, key: 'b', epoch: 1, value: buf('lost') });
      await appendFile(aof, frame.subarray(0, frame.length - 3));

      const s2 = await EmbeddedStore.open({ dataDir: path });
      try {
        assert.deepEqual(await s2.getAtEpoch('a'), { epoch: 1, value: buf('kept') });
        assert.equal(await s2.getAtEpoch('b'), null);
        assert.equal((await stat(aof)).size, goodSize, 'the torn tail is cut off');
        assert.equal(await s2.incr('n'), 2, 'appends after the cut are readable');
      } finally {
        await s2.close();
      }
      const s3 = await EmbeddedStore.open({ dataDir: path });
      try {
        assert.deepEqual(Buffer.from((await s3.get('n'))!), buf('2'));
      } finally {
        await s3.close();
      }
    }));

  test('a torn header (fewer than 8 bytes) is tolerated too', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      await s1.putAtEpoch('a', 1, buf('kept'));
      await s1.close();
      await appendFile(join(path, embeddedStoreFiles.aof), Buffer.from([9, 0, 0]));
      const s2 = await EmbeddedStore.open({ dataDir: path });
      try {
        assert.equal((await s2.getAtEpoch('a'))?.epoch, 1);
      } finally {
        await s2.close();
      }
    }));

  test('damage in the middle of the AOF is refused, not skipped', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      await s1.putAtEpoch('a', 1, buf('first'));
      await s1.putAtEpoch('b', 1, buf('second'));
      await s1.close();
      const aof = join(path, embeddedStoreFiles.aof);
      const content = await readFile(aof);
      content[10] = content[10]! ^ 0xff; // inside the first record's payload
      await writeFile(aof, content);
      await assert.rejects(EmbeddedStore.open({ dataDir: path }), /corrupt record at offset 0/);
      // The failed open must not leave the dir locked.
      content[10] = content[10]! ^ 0xff;
      await writeFile(aof, content);
      const s2 = await EmbeddedStore.open({ dataDir: path });
      await s2.close();
    }));

  test('compaction writes a snapshot, empties the AOF, and keeps every value', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path, compactAfterBytes: 2048, fsync: false });
      const lease = await s1.acquireLease('ctl', 'a', 'A', 60_000);
      assert.ok(lease);
      for (let i = 0; i < 200; i++) await s1.putAtEpoch(`k${i % 20}`, i, buf(`v${i}`));
      for (let i = 0; i < 30; i++) await s1.incr('n');
      await s1.del('k0');
      await s1.close();
      const snapshotSize = (await stat(join(path, embeddedStoreFiles.snapshot))).size;
      const aofSize = (await stat(join(path, embeddedStoreFiles.aof))).size;
      assert.ok(snapshotSize > 0, 'snapshot written');
      assert.ok(aofSize < 2048, `AOF compacted (${aofSize} bytes)`);

      const s2 = await EmbeddedStore.open({ dataDir: path });
      try {
        assert.equal(await s2.getAtEpoch('k0'), null);
        for (let k = 1; k < 20; k++) {
          const last = 180 + k; // the last i with i % 20 === k
          assert.deepEqual(await s2.getAtEpoch(`k${k}`), { epoch: last, value: buf(`v${last}`) });
        }
        assert.equal(await s2.incr('n'), 31);
        const next = await s2.acquireLease('ctl', 'b', 'B', 1000);
        assert.ok(next && next.token > lease.token, 'token counter survives compaction');
      } finally {
        await s2.close();
      }
    }));

  test('a crash between snapshot and AOF truncation replays to the same state', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      await s1.putAtEpoch('ep', 1, buf('one'));
      await s1.putAtEpoch('ep', 2, buf('two'));
      await s1.incr('n');
      await s1.incr('n');
      await s1.putAtEpoch('tmp', 1, buf('t'));
      await s1.del('tmp');
      await s1.close();
      const aof = join(path, embeddedStoreFiles.aof);
      const oldAof = await readFile(aof);

      // Open with a tiny threshold: compacts at open (snapshot + empty AOF).
      const s2 = await EmbeddedStore.open({ dataDir: path, compactAfterBytes: 1 });
      await s2.close();
      assert.equal((await stat(aof)).size, 0);
      // Put the pre-compaction AOF back, as if the process died before truncating it.
      await writeFile(aof, oldAof);

      const s3 = await EmbeddedStore.open({ dataDir: path });
      try {
        assert.deepEqual(await s3.getAtEpoch('ep'), { epoch: 2, value: buf('two') });
        assert.equal(await s3.getAtEpoch('tmp'), null);
        assert.equal(await s3.incr('n'), 3);
      } finally {
        await s3.close();
      }
    }));

  test('writes issued together all become durable (group commit) in call order', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      await Promise.all(Array.from({ length: 50 }, (_, i) => s1.putAtEpoch('k', i, buf(`v${i}`))));
      await s1.close();
      const s2 = await EmbeddedStore.open({ dataDir: path });
      try {
        assert.deepEqual(await s2.getAtEpoch('k'), { epoch: 49, value: buf('v49') });
      } finally {
        await s2.close();
      }
    }));
});

describe('embedded store: data dir lock', () => {
  test('a data dir cannot be opened twice at once; after close it can', () =>
    withDir(async (path) => {
      const s1 = await EmbeddedStore.open({ dataDir: path });
      await assert.rejects(EmbeddedStore.open({ dataDir: path }), FailedPreconditionError);
      await s1.close();
      const s2 = await EmbeddedStore.open({ dataDir: path });
      await s2.close();
    }));

  test('a lock left by a dead process is taken over', () =>
    withDir(async (path) => {
      // pid 2^22+1 is above Linux's pid_max default and cannot be alive.
      await writeFile(join(path, embeddedStoreFiles.lock), `${2 ** 22 + 1}\n`);
      const s = await EmbeddedStore.open({ dataDir: path });
      await s.close();
    }));

  test('a lock held by a live process is refused, naming the pid', () =>
    withDir(async (path) => {
      await writeFile(join(path, embeddedStoreFiles.lock), `${process.ppid}\n`);
      await assert.rejects(EmbeddedStore.open({ dataDir: path }), new RegExp(`in use by process ${process.ppid}`));
    }));
});

describe('embedded store: clock and modes', () => {
  test('lease expiry follows the injected clock', async () => {
    let now = 1_000_000;
    const s = await EmbeddedStore.open({ dataDir: null, now: () => now });
    try {
      const a = await s.acquireLease('ctl', 'a', 'A', 100);
      assert.ok(a);
      now += 60;
      assert.equal((await s.readLease('ctl'))?.ttlRemainingMs, 40);
      assert.equal(await s.acquireLease('ctl', 'b', 'B', 100), null);
      now += 40;
      assert.equal(await s.readLease('ctl'), null, 'expired exactly at the TTL');
      const b = await s.acquireLease('ctl', 'b', 'B', 100);
      assert.ok(b && b.token === a.token + 1);
    } finally {
      await s.close();
    }
  });

  test('an empty dataDir is refused rather than meaning the current directory', async () => {
    await assert.rejects(EmbeddedStore.open({ dataDir: '' }), /expected a directory path or null/);
  });

  test('openStore without a Redis URL gives the embedded store (memory only without a dir)', async () => {
    const mem = await openStore({});
    try {
      assert.equal(mem.kind, 'embedded');
      await mem.putAtEpoch('k', 1, buf('x'));
      assert.equal((await mem.getAtEpoch('k'))?.epoch, 1);
    } finally {
      await mem.close();
    }
    await withDir(async (path) => {
      const disk = await openStore({ redisUrl: '', dataDir: path });
      await disk.incr('n');
      await disk.close();
      assert.ok((await stat(join(path, embeddedStoreFiles.aof))).size > 0, 'written to the data dir');
    });
  });
});
