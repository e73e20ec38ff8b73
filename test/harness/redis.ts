/**
 * Test harness: a real `redis-server` on 127.0.0.1 for contract and end-to-end tests.
 *
 * The port is picked by binding a throwaway listener to port 0 and closing it (redis does
 * not accept `--port 0`); if someone grabs it in between, redis exits with "Address already
 * in use" and we retry with a new port. Readiness is a condition (our own process answers
 * `INFO server`) polled with a deadline, not a sleep. No persistence: `--save '' --appendonly no`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createConnection, createServer } from 'node:net';

/** Options of {@link startRedis}. */
export interface StartRedisOptions {
  /**
   * Port to use (e.g. to bring a stopped server back on the same address).
   * @default a free port
   */
  readonly port?: number;
  /**
   * How long to wait for the server to answer PING.
   * @default 10000
   */
  readonly startTimeoutMs?: number;
  /**
   * Binary to run.
   * @default process.env.REDIS_SERVER_BIN, else 'redis-server'
   */
  readonly binary?: string;
  /** Extra `redis-server` arguments (e.g. `['--maxmemory', '10mb']`). */
  readonly extraArgs?: readonly string[];
}

/** A running redis-server. */
export interface RedisHandle {
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** Send a signal without waiting (SIGKILL by default; SIGSTOP/SIGCONT to simulate a hang). */
  kill(signal?: NodeJS.Signals): void;
}

const HOST = '127.0.0.1';
const MAX_PORT_ATTEMPTS = 5;
const POLL_INTERVAL_MS = 20;

/** Children still running, killed if the test process exits without stopping them. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackForExit(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

/** A port that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not read the port of a probe listener'))));
    });
  });
}

/**
 * Ask the server on `port` for its pid (`INFO server`, a PING that also says who answered).
 * Resolves the pid, or null when nothing (or nothing sensible) answered in time. Checking
 * the pid matters: after a port race, another redis may be answering on "our" port.
 */
function probe(port: number, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: HOST, port });
    let reply = '';
    const done = (pid: number | null): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    sock.once('error', () => done(null));
    sock.once('close', () => done(null));
    sock.once('connect', () => sock.write('INFO server\r\n'));
    sock.on('data', (d) => {
      reply += d.toString('latin1');
      const m = /process_id:(\d+)\r\n/.exec(reply);
      if (m) done(Number(m[1]));
      else if (reply.startsWith('-')) done(null);
    });
  });
}

type Attempt = { kind: 'ready'; child: ChildProcess } | { kind: 'addr-in-use' };

async function attempt(binary: string, port: number, extraArgs: readonly string[], deadline: number): Promise<Attempt> {
  const args = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--daemonize', 'no', ...extraArgs];
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  trackForExit(child);
  let output = '';
  const collect = (d: Buffer): void => {
    // Keep the tail only: enough to explain a failure.
    output = (output + d.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let spawnError: Error | null = null;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  child.once('error', (e) => (spawnError = e));

  for (;;) {
    if (spawnError) throw new Error(`could not start ${binary}: ${(spawnError as Error).message}`);
    if (exited) {
      if (/address already in use/i.test(output)) return { kind: 'addr-in-use' };
      const { code, signal } = exited;
      throw new Error(`redis-server exited during start (code ${code}, signal ${signal}):\n${output}`);
    }
    if ((await probe(port, 500)) === child.pid) return { kind: 'ready', child };
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not answer PING in time:\n${output}`);
    }
    // Polling interval of a condition with a deadline, not synchronisation by sleep.
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
}

/** Start a redis-server on 127.0.0.1 and wait until it answers PING. */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisHandle> {
  const binary = opts.binary ?? process.env.REDIS_SERVER_BIN ?? 'redis-server';
  const deadline = Date.now() + (opts.startTimeoutMs ?? 10_000);
  for (let i = 0; i < MAX_PORT_ATTEMPTS; i++) {
    const port = opts.port ?? (await freePort());
    const res = await attempt(binary, port, opts.extraArgs ?? [], deadline);
    if (res.kind === 'addr-in-use') {
      if (opts.port !== undefined) throw new Error(`port ${opts.port} is already in use`);
      continue;
    }
    const child = res.child;
    let stopping: Promise<void> | null = null;
    return {
      url: `redis://${HOST}:${port}`,
      port,
      kill(signal: NodeJS.Signals = 'SIGKILL'): void {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      },
      stop(): Promise<void> {
        stopping ??= new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          // A SIGSTOPped server cannot act on SIGTERM until continued.
          child.kill('SIGCONT');
          child.kill('SIGTERM');
        });
        return stopping;
      },
    };
  }
  throw new Error(`could not find a free port for redis-server after ${MAX_PORT_ATTEMPTS} attempts`);
}
