/**
 * The pure rules of shared data from a master RS (libs/adsm/src/shared.ts): what a follower
 * accepts (order, gaps, epoch fencing), what a source sends a follower (snapshot or updates), and
 * how the source's view follows the master RS's commits. The processes are in
 * test/e2e/shared-data.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { judgeSharedEvent, planCatchUp, planPublish, type SharedPosition, type SharedStep } from '../src/shared';

const at = (epoch: number, seq: number, loaded = true): SharedPosition => ({ loaded, epoch, seq });
const step = (epoch: number, seqs: number[], snapshotSeq?: number): SharedStep => ({
  epoch,
  snapshot: snapshotSeq !== undefined,
  snapshotSeq: snapshotSeq ?? 0,
  updates: seqs.map((seq) => ({ seq })),
});

describe('judgeSharedEvent (follower)', () => {
  test('contiguous updates are applied in order; those already applied are skipped', () => {
    assert.deepEqual(judgeSharedEvent(at(2, 5), step(2, [6, 7, 8])), { kind: 'apply', snapshot: false, first: 0, count: 3, seq: 8 });
    assert.deepEqual(judgeSharedEvent(at(2, 7), step(2, [6, 7, 8, 9])), { kind: 'apply', snapshot: false, first: 2, count: 2, seq: 9 });
    assert.deepEqual(judgeSharedEvent(at(2, 9), step(2, [8, 9])), { kind: 'apply', snapshot: false, first: 2, count: 0, seq: 9 });
  });

  test('a hole or a reordering is a gap (the follower asks again, for a snapshot)', () => {
    assert.equal(judgeSharedEvent(at(2, 5), step(2, [7])).kind, 'gap');
    assert.equal(judgeSharedEvent(at(2, 5), step(2, [6, 8])).kind, 'gap');
    assert.equal(judgeSharedEvent(at(2, 5), step(2, [6, 5])).kind, 'gap');
  });

  test('without a snapshot nothing can be applied', () => {
    assert.equal(judgeSharedEvent(at(0, 0, false), step(1, [1])).kind, 'gap');
    assert.deepEqual(judgeSharedEvent(at(0, 0, false), step(1, [4, 5], 3)), { kind: 'apply', snapshot: true, first: 0, count: 2, seq: 5 });
  });

  test('epoch fencing: a step from an older epoch than the view holds is refused (deposed source)', () => {
    const v = judgeSharedEvent(at(3, 10), step(2, [11]));
    assert.equal(v.kind, 'stale');
    assert.equal(judgeSharedEvent(at(3, 10), step(2, [], 20)).kind, 'stale', 'a snapshot too');
  });

  test('a newer epoch is taken: its snapshot replaces the view even when it is shorter', () => {
    assert.deepEqual(judgeSharedEvent(at(2, 10), step(3, [], 9)), { kind: 'apply', snapshot: true, first: 0, count: 0, seq: 9 });
    assert.deepEqual(judgeSharedEvent(at(2, 10), step(3, [11])), { kind: 'apply', snapshot: false, first: 0, count: 1, seq: 11 });
  });

  test('within an epoch a snapshot never moves the view back (it is skipped, its updates continue the view)', () => {
    assert.deepEqual(judgeSharedEvent(at(2, 10), step(2, [9, 10, 11], 8)), { kind: 'apply', snapshot: false, first: 2, count: 1, seq: 11 });
    assert.deepEqual(judgeSharedEvent(at(2, 10), step(2, [], 12)), { kind: 'apply', snapshot: true, first: 0, count: 0, seq: 12 });
  });
});

describe('planCatchUp (source → one follower)', () => {
  const source = { epoch: 4, seq: 100, firstLogSeq: 60 };
  test('a new follower, one at another epoch, or one claiming more than the source has gets a snapshot', () => {
    assert.deepEqual(planCatchUp(at(0, 0, false), source), { kind: 'snapshot' });
    assert.deepEqual(planCatchUp(at(3, 90), source), { kind: 'snapshot' });
    assert.deepEqual(planCatchUp(at(4, 101), source), { kind: 'snapshot' });
  });
  test('a follower behind the log tail gets a snapshot; within it, the updates after its position', () => {
    assert.deepEqual(planCatchUp(at(4, 58), source), { kind: 'snapshot' });
    assert.deepEqual(planCatchUp(at(4, 59), source), { kind: 'updates', fromSeq: 60 });
    assert.deepEqual(planCatchUp(at(4, 99), source), { kind: 'updates', fromSeq: 100 });
    assert.deepEqual(planCatchUp(at(4, 100), source), { kind: 'none' });
  });
  test('an empty log: only a follower at the source position needs nothing', () => {
    assert.deepEqual(planCatchUp(at(4, 100), { epoch: 4, seq: 100, firstLogSeq: 101 }), { kind: 'none' });
    assert.deepEqual(planCatchUp(at(4, 99), { epoch: 4, seq: 100, firstLogSeq: 101 }), { kind: 'snapshot' });
  });
});

describe('planPublish (the source view follows the master RS commits)', () => {
  const commit = (epoch: number, seq: number, slotSeq: number, first: number, last: number) => ({ epoch, seq, slotSeq, firstLogSeq: first, lastLogSeq: last });
  test('the committed updates after the view come from the RS log', () => {
    assert.deepEqual(planPublish(at(2, 10), commit(2, 14, 14, 1, 14)), { kind: 'updates', fromSeq: 11, toSeq: 14 });
    // Updates recorded but not committed yet (slotSeq ahead) are not published.
    assert.deepEqual(planPublish(at(2, 10), commit(2, 12, 16, 1, 16)), { kind: 'updates', fromSeq: 11, toSeq: 12 });
  });
  test('a new epoch with nothing new publishes the epoch only; a promoted standby continues from its view', () => {
    assert.deepEqual(planPublish(at(2, 10), commit(3, 10, 10, 5, 10)), { kind: 'updates', fromSeq: 11, toSeq: 10 });
    assert.deepEqual(planPublish(at(2, 10), commit(3, 12, 12, 5, 12)), { kind: 'updates', fromSeq: 11, toSeq: 12 });
  });
  test('without the updates in the log, a snapshot of the RS state when it equals the committed state', () => {
    assert.deepEqual(planPublish(at(0, 0, false), commit(1, 0, 0, 1, 0)), { kind: 'snapshot' });
    assert.deepEqual(planPublish(at(2, 3), commit(2, 40, 40, 20, 40)), { kind: 'snapshot' });
    assert.equal(planPublish(at(2, 3), commit(2, 40, 44, 20, 44)).kind, 'later', 'a batch is replicating: the next commit publishes');
  });
  test('a view from an older epoch ahead of the new active is replaced by its state; a view at a newer epoch is left alone', () => {
    // Cannot happen while the commit rule holds (a promoted standby holds every committed update);
    // if it did, the new epoch's state is the truth every copy must converge to.
    assert.deepEqual(planPublish(at(2, 12), commit(3, 10, 10, 1, 10)), { kind: 'snapshot' });
    assert.equal(planPublish(at(5, 12), commit(4, 20, 20, 1, 20)).kind, 'later');
  });
});
