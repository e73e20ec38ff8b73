/**
 * config.ts: precedence (flag > env > default), parsing per type, and one ConfigError that
 * lists every problem.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, configHelp, defineConfig, loadConfig } from '../src/config';

const schema = defineConfig({
  listenAddress: { type: 'string', env: 'UNDERSTUDY_LISTEN', flag: 'listen', default: '127.0.0.1:7000', description: 'gRPC listen address' },
  copies: { type: 'int', env: 'UNDERSTUDY_COPIES', flag: 'copies', default: 2, min: 1, max: 16, description: 'copies per app' },
  heartbeatIntervalMs: { type: 'ms', env: 'UNDERSTUDY_HEARTBEAT_INTERVAL', flag: 'heartbeat-interval', default: 200, min: 10, max: 60_000, description: 'heartbeat period' },
  fsync: { type: 'bool', env: 'UNDERSTUDY_FSYNC', flag: 'fsync', default: true, description: 'fsync store writes' },
  mode: { type: 'enum', values: ['redis', 'embedded'], env: 'UNDERSTUDY_STORE', flag: 'store', default: 'embedded', description: 'store adapter' },
  redisUrl: { type: 'string', env: 'UNDERSTUDY_REDIS_URL', flag: 'redis-url', optional: true, description: 'Redis URL' },
});

describe('config: values', () => {
  test('defaults apply when nothing is set', () => {
    const c = loadConfig(schema, { env: {}, argv: [] });
    assert.deepEqual({ ...c }, { listenAddress: '127.0.0.1:7000', copies: 2, heartbeatIntervalMs: 200, fsync: true, mode: 'embedded', redisUrl: undefined });
  });

  test('env overrides defaults', () => {
    const c = loadConfig(schema, {
      env: { UNDERSTUDY_LISTEN: '0.0.0.0:9000', UNDERSTUDY_COPIES: '4', UNDERSTUDY_HEARTBEAT_INTERVAL: '2s', UNDERSTUDY_FSYNC: 'no', UNDERSTUDY_STORE: 'redis', UNDERSTUDY_REDIS_URL: 'redis://r:6379' },
      argv: [],
    });
    assert.deepEqual({ ...c }, { listenAddress: '0.0.0.0:9000', copies: 4, heartbeatIntervalMs: 2000, fsync: false, mode: 'redis', redisUrl: 'redis://r:6379' });
  });

  test('flags override env', () => {
    const c = loadConfig(schema, {
      env: { UNDERSTUDY_COPIES: '4', UNDERSTUDY_FSYNC: 'false', UNDERSTUDY_STORE: 'redis' },
      argv: ['--copies', '8', '--fsync', '--store=embedded', '--heartbeat-interval', '150ms'],
    });
    assert.equal(c.copies, 8);
    assert.equal(c.fsync, true);
    assert.equal(c.mode, 'embedded');
    assert.equal(c.heartbeatIntervalMs, 150);
    assert.equal(loadConfig(schema, { env: {}, argv: ['--no-fsync'] }).fsync, false);
  });

  test('durations accept ms, s, m, h and bare milliseconds', () => {
    const ms = (v: string): number => loadConfig(schema, { env: { UNDERSTUDY_HEARTBEAT_INTERVAL: v }, argv: [] }).heartbeatIntervalMs;
    assert.deepEqual(['250', '250ms', '1.5s', '1m'].map(ms), [250, 250, 1500, 60_000]);
  });

  test('an empty env var counts as unset', () => {
    const c = loadConfig(schema, { env: { UNDERSTUDY_REDIS_URL: '', UNDERSTUDY_COPIES: '' }, argv: [] });
    assert.equal(c.redisUrl, undefined);
    assert.equal(c.copies, 2);
  });

  test("an empty string default means unset, and an empty value is then accepted", () => {
    const s = defineConfig({ redisUrl: { type: 'string', env: 'REDIS_URL', flag: 'redis-url', default: '', description: 'Redis URL; empty = embedded' } });
    assert.equal(loadConfig(s, { env: {}, argv: [] }).redisUrl, '');
    assert.equal(loadConfig(s, { env: {}, argv: ['--redis-url='] }).redisUrl, '');
    assert.equal(loadConfig(s, { env: {}, argv: ['--redis-url', 'redis://h:1'] }).redisUrl, 'redis://h:1');
    assert.throws(() => loadConfig(schema, { env: {}, argv: ['--listen='] }), /--listen: expected a non-empty string, got ''/);
  });

  test('the config type is inferred from the schema', () => {
    const c = loadConfig(schema, { env: {}, argv: [] });
    const port: number = c.copies;
    const mode: 'redis' | 'embedded' = c.mode;
    const url: string | undefined = c.redisUrl;
    // @ts-expect-error an optional field without a default may be undefined
    const notOptional: string = c.redisUrl;
    // @ts-expect-error enum values are literal types
    const wrong: 'memory' = c.mode;
    assert.deepEqual([port, mode, url, notOptional, wrong], [2, 'embedded', undefined, undefined, 'embedded']);
  });
});

describe('config: problems', () => {
  test('every invalid value is listed in one ConfigError with its env var / flag and expected form', () => {
    let caught: unknown;
    try {
      loadConfig(schema, {
        env: { UNDERSTUDY_COPIES: 'three', UNDERSTUDY_HEARTBEAT_INTERVAL: '5', UNDERSTUDY_FSYNC: 'maybe', UNDERSTUDY_STORE: 'etcd' },
        argv: ['--listen', '--bogus', 'extra'],
      });
    } catch (e) {
      caught = e;
    }
    assert.ok(caught instanceof ConfigError, `got ${String(caught)}`);
    const p = caught.problems;
    const expectAll = [
      /unexpected argument 'extra'/,
      /unknown flag '--bogus'/,
      /--listen: missing value; expected a non-empty string/,
      /UNDERSTUDY_COPIES: expected an integer between 1 and 16, got 'three'/,
      /UNDERSTUDY_HEARTBEAT_INTERVAL: expected a duration .* between 10 and 60000 ms, got '5'/,
      /UNDERSTUDY_FSYNC: expected a boolean .*got 'maybe'/,
      /UNDERSTUDY_STORE: expected one of 'redis', 'embedded', got 'etcd'/,
    ];
    assert.equal(p.length, expectAll.length, p.join('\n'));
    for (const re of expectAll) assert.ok(p.some((line) => re.test(line)), `missing ${re} in:\n${p.join('\n')}`);
    assert.match(caught.message, /7 problems/);
  });

  test('a required field without a value is reported with where to set it', () => {
    const s = defineConfig({ copyId: { type: 'string', env: 'UNDERSTUDY_COPY_ID', flag: 'copy-id', description: 'this copy' } });
    assert.throws(() => loadConfig(s, { env: {}, argv: [] }), (e: unknown) => e instanceof ConfigError && /UNDERSTUDY_COPY_ID \/ --copy-id: required/.test(e.problems[0]!));
  });

  test('--flag and --no-flag together, or a value on a bool flag, are refused', () => {
    assert.throws(() => loadConfig(schema, { env: {}, argv: ['--fsync', '--no-fsync'] }), /both given/);
    assert.throws(() => loadConfig(schema, { env: {}, argv: ['--fsync=false'] }), /takes no value/);
  });

  test('schema mistakes are caught by defineConfig', () => {
    assert.throws(
      () =>
        defineConfig({
          a: { type: 'int', env: 'A', default: 0, min: 1, description: 'x' },
          b: { type: 'enum', values: ['x'], env: 'A', description: 'dup env' },
          c: { type: 'string', env: 'lower', description: 'bad env' },
        }),
      (e: unknown) => e instanceof ConfigError && e.problems.length === 3,
    );
  });

  test('configHelp lists every field with its sources and default', () => {
    const help = configHelp(schema);
    assert.match(help, /UNDERSTUDY_HEARTBEAT_INTERVAL \/ --heartbeat-interval/);
    assert.match(help, /--fsync\/--no-fsync/);
    assert.match(help, /default 200/);
    assert.match(help, /optional/);
  });
});
