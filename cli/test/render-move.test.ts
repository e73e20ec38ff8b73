/** `understudy move` output and the pending-moves table of `understudy status`. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderMove, renderMoves } from '../src/render';

describe('renderMove', () => {
  const base = { fromCopyId: 'c1', toCopyId: 'c2', epoch: 7, pauseMs: 3.456, totalMs: 12.34, paused: true, pauseDetail: '', lastSeq: 41, caughtUpFirst: false, assignment: undefined };
  it('from -> to, epoch, pause and total', () => {
    assert.equal(renderMove('counter', 3, base), 'moved counter/3: c1 -> c2 at epoch 7 (paused 3.46 ms; total 12.3 ms)\n');
  });
  it('says when the target caught up first', () => {
    assert.match(renderMove('counter', 3, { ...base, caughtUpFirst: true }), /; c2 caught up as a standby first\)\n$/);
  });
  it('says when the old active could not be paused, and why when the controller knows', () => {
    assert.match(renderMove('counter', 3, { ...base, paused: false }), /without a pause \(the old active did not answer the pause request; the epoch fenced it\)/);
    assert.match(
      renderMove('counter', 3, { ...base, paused: false, pauseDetail: 'interrupted: a fault report is waiting' }),
      /without a pause \(the old active was not paused: interrupted: a fault report is waiting; the epoch fenced it\)/,
    );
  });
});

describe('renderMoves', () => {
  it('one row per pending move', () => {
    const out = renderMoves([{ app: 'counter', rs: 2, fromCopyId: 'c1', toCopyId: 'c4', sinceUnixMs: 10_000, reason: 'load manager' }], 12_500);
    assert.match(out, /counter\/2.*c1.*c4.*2\.5s ago.*load manager/);
  });
});
