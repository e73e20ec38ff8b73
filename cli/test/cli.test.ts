import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseControllerList, runCli, shortReason, type CliIo } from '../src/cli';
import { UsageError } from '../src/errors';
import { freePort } from '@understudy/runtime';

/** Run the CLI in-process and capture what it prints. */
async function cli(argv: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = { out: (s) => void (out += s), err: (s) => void (err += s), env, now: () => 0 };
  const code = await runCli(argv, io);
  return { code, out, err };
}

/** A port nothing listens on (free now, nothing started on it). */
const deadPort = freePort;

describe('command line', () => {
  it('--help and --version exit 0', async () => {
    const h = await cli(['--help']);
    assert.equal(h.code, 0);
    for (const c of ['status', 'apply', 'switchover', 'drain', 'disable', 'enable', '--controllers', '--json', '--timeout-ms']) assert.ok(h.out.includes(c), `help mentions ${c}`);
    const v = await cli(['--version']);
    assert.equal(v.code, 0);
    assert.match(v.out, /^\d+\.\d+\.\d+/);
  });

  it('no command → exit 2 with help', async () => {
    const r = await cli([]);
    assert.equal(r.code, 2);
    assert.match(r.err, /Usage: understudy/);
    assert.match(r.err, /understudy: no command given/);
  });

  it('unknown command / option, missing argument → exit 2 with `understudy:` on stderr', async () => {
    for (const [argv, re] of [
      [['frobnicate'], /^understudy: unknown command 'frobnicate'/],
      [['status', '--bogus'], /^understudy: unknown option '--bogus'/],
      [['drain'], /^understudy: missing required argument 'copy'/],
      [['switchover', 'counter', '5'], /^understudy: required option '--to <copy>' not specified/],
      [['apply'], /^understudy: required option '-f, --file <path>' not specified/],
      [['--timeout-ms', 'soon', 'status'], /--timeout-ms must be a positive integer, got 'soon'/],
      [['--timeout-ms', '0', 'status'], /--timeout-ms must be 1\.\.\d+, got 0/],
    ] as const) {
      const r = await cli([...argv]);
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
      assert.equal(r.out, '');
    }
  });

  it('usage errors with --json are a JSON error on stdout', async () => {
    const r = await cli(['--json', 'status', '--bogus']);
    assert.equal(r.code, 2);
    assert.equal(r.err, '');
    const j = JSON.parse(r.out) as { error: { code: string; message: string } };
    assert.equal(j.error.code, 'INVALID_ARGUMENT');
    assert.match(j.error.message, /unknown option '--bogus'/);
  });

  it('a bad RS number or controller address is caught before anything is sent', async () => {
    const rs = await cli(['switchover', 'counter', '-1', '--to', 'c1']);
    assert.equal(rs.code, 2);
    const rs2 = await cli(['switchover', 'counter', 'five', '--to', 'c1']);
    assert.equal(rs2.code, 2);
    assert.match(rs2.err, /^understudy: RS must be a resource set number \(0, 1, 2 …\), got 'five'/);
    const a = await cli(['--controllers', 'localhost', 'status']);
    assert.equal(a.code, 2);
    assert.match(a.err, /--controllers: 'localhost' is not host:port/);
    const env = await cli(['status'], { UNDERSTUDY_CONTROLLERS: 'x:99999' });
    assert.equal(env.code, 2);
    assert.match(env.err, /'x:99999' is not host:port/);
  });

  it('a missing topology file → exit 2 naming it (nothing sent)', async () => {
    const r = await cli(['--controllers', '127.0.0.1:1', 'apply', '-f', '/nonexistent/topo.yaml']);
    assert.equal(r.code, 2);
    assert.equal(r.err, 'understudy: bad topology file /nonexistent/topo.yaml: cannot read the file: no such file\n');
  });

  it('unreachable controllers → exit 5 naming every address tried, within the timeout', async () => {
    const a = `127.0.0.1:${await deadPort()}`;
    const b = `127.0.0.1:${await deadPort()}`;
    const started = Date.now();
    const r = await cli(['--controllers', `${a},${b}`, '--timeout-ms', '700', 'drain', 'c1']);
    const took = Date.now() - started;
    assert.equal(r.code, 5, r.err);
    assert.match(r.err, new RegExp(`^understudy: no controller reachable: tried ${a}, ${b} for \\d+ ms \\(timeout 700 ms\\); last error: .*ECONNREFUSED.* \\(UNAVAILABLE\\)\\n$`));
    assert.ok(took < 700 + 500, `took ${took} ms`);
    const j = await cli(['--controllers', a, '--timeout-ms', '300', '--json', 'status']);
    assert.equal(j.code, 5);
    assert.equal((JSON.parse(j.out) as { error: { code: string } }).error.code, 'UNAVAILABLE');
  });
});

describe('helpers', () => {
  it('parseControllerList', () => {
    assert.deepEqual(parseControllerList('127.0.0.1:7100'), ['127.0.0.1:7100']);
    assert.deepEqual(parseControllerList(' a:1 , b.example:2,,a:1 '), ['a:1', 'b.example:2']);
    assert.deepEqual(parseControllerList('[::1]:7100'), ['[::1]:7100']);
    assert.throws(() => parseControllerList(''), UsageError);
    assert.throws(() => parseControllerList('a:0'), /port 1\.\.65535/);
    assert.throws(() => parseControllerList('a:b'), UsageError);
  });

  it('shortReason trims grpc-js transport noise', () => {
    assert.equal(
      shortReason('14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1 (2024-01-01T00:00:00.000Z). Resolution note: ', 14),
      'connect ECONNREFUSED 127.0.0.1:1',
    );
    assert.equal(shortReason('not the leader; no leader known yet, retry shortly', 14), 'not the leader; no leader known yet, retry shortly');
    assert.equal(shortReason('4 DEADLINE_EXCEEDED: Deadline exceeded after 1.001s', 4), 'no answer before the deadline');
  });
});
