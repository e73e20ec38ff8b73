/**
 * Starts Understudy processes (controller replicas, application copies) as children and waits
 * for their ready line: a JSON stdout line `{"msg": <readyMsg>, "address": "host:port"}`.
 * Used by the quickstart job and the end-to-end harness. Every child started here is killed
 * when the parent exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { createInterface } from 'node:readline';

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** A started process. */
export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Address from its ready line. */
  readonly address: string;
  /** Last output lines (stdout+stderr), for failure messages. */
  output(): string;
  /** Send a signal (SIGKILL, SIGSTOP, SIGCONT, SIGTERM). */
  signal(sig: NodeJS.Signals): void;
  /** Resolves with the exit code/signal once the process is gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL and wait until it is gone. */
  kill(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (to give a restarted process the same address). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Options of {@link startProcess}. */
export interface StartOptions {
  readonly name: string;
  /**
   * Entry point (relative to `cwd`): a TypeScript file runs with `node --import tsx`; a `.js`
   * bundle (`scripts/build.mjs`, what a deployment runs) with plain `node`.
   */
  readonly script: string;
  /** Working directory. */
  readonly cwd: string;
  /** Also copy each output line here (e.g. a log file or the terminal). */
  readonly onLine?: (line: string) => void;
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  /** The `msg` of the JSON stdout line that says the process is ready; it carries `address`. */
  readonly readyMsg: string;
  /** @default 30000 */
  readonly readyTimeoutMs?: number;
  /**
   * Own process group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches the parent
   * only, which then stops the child itself (e.g. after draining). The child is still killed when
   * the parent exits, but not when the parent is killed with SIGKILL. @default false
   */
  readonly detached?: boolean;
}

/** Spawn an entry point (see {@link StartOptions.script}) and wait for its ready line. */
export function startProcess(o: StartOptions): Promise<Proc> {
  // A bundle needs no loader: tsx's module hooks cost a process ~50 MB of RSS (its own loader
  // thread), which also lengthens the kernel's teardown of a killed process, i.e. the time
  // before its sockets close and a fault manager sees the crash.
  // Nor --enable-source-maps: grpc-js reads `error.stack` of every failed call (it appends the
  // caller's stack), and mapping frames through a bundle's source map is slow. With it, the
  // failover bench's crash p50 was 95 ms instead of 44 ms (fault reports answered ~50 ms later).
  // Stack frames then name bundle lines (esbuild marks each source file in the bundle);
  // NODE_OPTIONS=--enable-source-maps maps them when wanted.
  const loader = o.script.endsWith('.js') ? [] : ['--import', 'tsx'];
  const child = spawn(process.execPath, [...loader, o.script, ...(o.args ?? [])], {
    cwd: o.cwd,
    env: { ...process.env, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: o.detached ?? false,
  });
  live.add(child);
  const lines: string[] = [];
  const keep = (l: string): void => {
    o.onLine?.(l);
    lines.push(l);
    if (lines.length > 200) lines.shift();
  };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  createInterface({ input: child.stderr! }).on('line', keep);
  return new Promise<Proc>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${o.name} not ready within ${o.readyTimeoutMs ?? 30_000} ms:\n${lines.join('\n')}`));
    }, o.readyTimeoutMs ?? 30_000);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${o.name} exited before ready (code ${code}, signal ${signal}):\n${lines.join('\n')}`));
    });
    createInterface({ input: child.stdout! }).on('line', (l) => {
      keep(l);
      if (!l.startsWith('{')) return;
      let m: { msg?: string; address?: string };
      try {
        m = JSON.parse(l) as { msg?: string; address?: string };
      } catch {
        return;
      }
      if (m.msg === o.readyMsg && m.address) {
        clearTimeout(timer);
        resolve({
          name: o.name,
          child,
          pid: child.pid!,
          address: m.address,
          output: () => lines.join('\n'),
          signal: (sig) => {
            if (child.exitCode === null && child.signalCode === null) child.kill(sig);
          },
          exited,
          kill: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
            await exited;
          },
        });
      }
    });
  });
}

