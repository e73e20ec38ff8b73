/**
 * logging.ts: JSON lines with the documented fields, level handling, silence for tests.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { afterEach, describe, test } from 'node:test';
import { createLogger, silentLogger } from '../src/logging';

function capture(): { stream: Writable; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { stream, lines };
}

describe('logging', () => {
  const saved = process.env.LOG_LEVEL;
  afterEach(() => {
    if (saved === undefined) delete process.env.LOG_LEVEL;
    else process.env.LOG_LEVEL = saved;
  });

  test('writes one JSON object per line with service, level name, time and the conventional fields', () => {
    const { stream, lines } = capture();
    const log = createLogger({ service: 'router', base: { copy: 'aggregator-1' }, destination: stream });
    log.child({ app: 'aggregator', rs: 3 }).info({ epoch: 7 }, 'activated');
    assert.equal(lines.length, 1);
    const l = lines[0]!;
    assert.equal(l.service, 'router');
    assert.equal(l.level, 'info');
    assert.equal(l.msg, 'activated');
    assert.deepEqual([l.copy, l.app, l.rs, l.epoch], ['aggregator-1', 'aggregator', 3, 7]);
    assert.ok(!Number.isNaN(Date.parse(String(l.time))), 'ISO time');
    assert.equal(l.trace_id, undefined, 'no trace fields without an active span');
  });

  test('level comes from LOG_LEVEL (default info), and an explicit level wins', () => {
    delete process.env.LOG_LEVEL;
    assert.equal(createLogger({ service: 's', destination: capture().stream }).level, 'info');
    process.env.LOG_LEVEL = 'debug';
    assert.equal(createLogger({ service: 's', destination: capture().stream }).level, 'debug');
    assert.equal(createLogger({ service: 's', level: 'warn', destination: capture().stream }).level, 'warn');
    const { stream, lines } = capture();
    const log = createLogger({ service: 's', level: 'warn', destination: stream });
    log.info('dropped');
    log.warn('kept');
    assert.deepEqual(lines.map((l) => l.msg), ['kept']);
  });

  test('an unknown level is refused, naming where it came from', () => {
    process.env.LOG_LEVEL = 'loud';
    assert.throws(() => createLogger({ service: 's' }), /LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent, got 'loud'/);
    assert.throws(() => createLogger({ service: 's', level: 'verbose' }), /^TypeError: level:/);
    assert.throws(() => createLogger({ service: '' }), /service must be a non-empty string/);
  });

  test('silentLogger drops everything', () => {
    const log = silentLogger();
    assert.equal(log.level, 'silent');
    assert.equal(log.isLevelEnabled('error'), false);
  });
});
