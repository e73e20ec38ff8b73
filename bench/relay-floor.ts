/**
 * What synchronous replication to 2 standbys can cost at best on THIS machine: the same process
 * layout and message path as `bench/replication` (a load process and three relay processes,
 * each the active of a third of the items and a standby of the rest; load → active → both
 * standbys → active → load; gRPC bidirectional streams on 127.0.0.1, the items of one event-loop
 * turn in one stream message), with no Understudy code at all: no protobuf, no handler, no
 * dedupe, no log. Each item is 96 opaque bytes; the active forwards it to both standbys, which
 * echo it, and answers the load when both echoed.
 *
 * The load is open loop at BENCH_RATE items/s (default 20,000), sent from a 1 ms timer exactly as
 * `BENCH_RATE=… npm run bench -- replication` sends, and each latency counts from when the item
 * was due. BENCH_WORK_US (default "0,5,10,15") adds that much busy CPU per item in each standby
 * and twice that in the active (standing in for the real per-update work), one measured point
 * per value, so the figures show where the tail bends as the machine gets busier.
 *
 * Per point: p50/p99/p999 of the latency, and `busy_pct`: the whole machine's non-idle CPU
 * (/proc/stat, all cores) over the measured window, i.e. how much of the box the relay used.
 * This bench exists to tell how much of `bench/replication`'s p99 is the machine rather than
 * the framework: compare its p99 at the same busy_pct.
 * Progress lines go to stdout; the last line is one JSON object.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { freePort } from '@understudy/runtime';
import { machineBusyPct, machineTicks, r2 } from './lib';

const RATE = Number(process.env.BENCH_RATE ?? 20_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 2);
const WORK_US = (process.env.BENCH_WORK_US ?? '0,5,10,15').split(',').map(Number);
const ITEM_BYTES = 96;

// ---- wire: a stream message is a batch of length-prefixed items --------------------------

const identity = (b: Buffer): Buffer => b;
const SERVICE: grpc.ServiceDefinition = {
  Relay: { path: '/floor.Floor/Relay', requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity, originalName: 'relay' },
};
const RelayClient = grpc.makeGenericClientConstructor(SERVICE, 'Floor');

/** Items queued in one event-loop turn go out as one message (what TickBatcher does). */
function turnBatcher(write: (b: Buffer) => void): (item: Buffer) => void {
  let queued: Buffer[] = [];
  let scheduled = false;
  return (item) => {
    queued.push(item);
    if (scheduled) return;
    scheduled = true;
    process.nextTick(() => {
      scheduled = false;
      const parts: Buffer[] = [];
      for (const q of queued) {
        const len = Buffer.allocUnsafe(4);
        len.writeUInt32LE(q.length);
        parts.push(len, q);
      }
      queued = [];
      write(Buffer.concat(parts));
    });
  };
}

function forEachItem(msg: Buffer, fn: (item: Buffer) => void): void {
  for (let off = 0; off + 4 <= msg.length; ) {
    const len = msg.readUInt32LE(off);
    fn(msg.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
}

function spin(us: number): void {
  if (us <= 0) return;
  const end = performance.now() + us / 1000;
  while (performance.now() < end);
}

function serve(port: number, onStream: (send: (item: Buffer) => void) => (item: Buffer) => void): Promise<grpc.Server> {
  const server = new grpc.Server();
  server.addService(SERVICE, {
    Relay: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      const onItem = onStream(turnBatcher((b) => call.write(b)));
      call.on('data', (m: Buffer) => forEachItem(m, onItem));
      call.on('error', () => undefined);
    },
  });
  return new Promise((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve(server))));
}

function connect(port: number, onItem: (item: Buffer) => void): (item: Buffer) => void {
  const client = new RelayClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as { Relay(): grpc.ClientDuplexStream<Buffer, Buffer> };
  const call = client.Relay();
  call.on('data', (m: Buffer) => forEachItem(m, onItem));
  call.on('error', () => undefined);
  return turnBatcher((b) => call.write(b));
}

// ---- roles -----------------------------------------------------------------------------------

/**
 * One of three relay processes, laid out like the replication bench's copies: the active for
 * the items the load sends it (forwarded to both others, answered when both echoed) and a
 * standby for the items the others forward to it (echoed). Byte 4 of an item says which.
 */
async function relay(port: number, peerPorts: number[], workUs: number): Promise<void> {
  const pending = new Map<number, { left: number; send: (b: Buffer) => void }>();
  const onEcho = (item: Buffer): void => {
    const id = item.readUInt32LE(0);
    const p = pending.get(id);
    if (p && --p.left === 0) {
      pending.delete(id);
      const answer = Buffer.from(item);
      answer[4] = 0;
      p.send(answer);
    }
  };
  // Connected on the first item (all three relays are up by then; a stream opened before its
  // server listens would fail).
  let links: ((item: Buffer) => void)[] | undefined;
  await serve(port, (send) => (item) => {
    if (item[4] === 1) {
      // standby: apply and echo
      spin(workUs);
      send(Buffer.from(item));
      return;
    }
    // active: handle, forward to both standbys, answer once both echoed
    spin(2 * workUs);
    links ??= peerPorts.map((p) => connect(p, onEcho));
    pending.set(item.readUInt32LE(0), { left: links.length, send });
    const fwd = Buffer.from(item);
    fwd[4] = 1;
    for (const l of links) l(fwd);
  });
}

async function point(workUs: number): Promise<Record<string, number>> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const kids: ChildProcess[] = [];
  const start = async (args: string[]): Promise<void> => {
    const c = fork(__filename, args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    kids.push(c);
    await new Promise<void>((resolve, reject) => {
      c.once('message', () => resolve());
      c.once('exit', (code) => reject(new Error(`relay ${args.join(' ')} exited ${code}`)));
    });
  };
  try {
    for (const p of ports) await start(['--relay', String(p), ports.filter((x) => x !== p).join(','), String(workUs)]);
    const due = new Map<number, number>();
    const lat: number[] = [];
    let measuring = false;
    const onAnswer = (item: Buffer): void => {
      const t = due.get(item.readUInt32LE(0));
      if (t === undefined) return;
      due.delete(item.readUInt32LE(0));
      if (measuring) lat.push(performance.now() - t);
    };
    const sends = ports.map((p) => connect(p, onAnswer));
    const t0 = performance.now();
    let sent = 0;
    let cpu0 = machineTicks();
    let unanswered = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = performance.now();
        if (!measuring && now - t0 >= WARMUP_S * 1000) {
          measuring = true;
          cpu0 = machineTicks();
          due.clear(); // warm-up items still out are not measured
        }
        const target = Math.floor(((now - t0) * RATE) / 1000);
        for (; sent < target; sent++) {
          const item = Buffer.alloc(ITEM_BYTES);
          item.writeUInt32LE(sent + 1, 0);
          // Items due during the warm-up are sent but not timed.
          if (measuring && due.size < 100_000) due.set(sent + 1, t0 + (sent * 1000) / RATE);
          sends[sent % sends.length]!(item);
        }
        if (now - t0 >= (WARMUP_S + SECONDS) * 1000) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
    const cpu1 = machineTicks();
    const drainUntil = performance.now() + 2000;
    while (due.size > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 10));
    unanswered = due.size;
    lat.sort((a, b) => a - b);
    const q = (p: number): number => r2(lat[Math.min(lat.length - 1, Math.ceil(p * lat.length) - 1)] ?? NaN);
    return { work_us: workUs, busy_pct: machineBusyPct(cpu0, cpu1), measured: lat.length, unanswered, p50_ms: q(0.5), p99_ms: q(0.99), p999_ms: q(0.999), max_ms: r2(lat[lat.length - 1] ?? NaN) };
  } finally {
    for (const k of kids) k.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const [role, port, peers, work] = process.argv.slice(2);
  if (role === '--relay') {
    await relay(Number(port), peers!.split(',').map(Number), Number(work));
    process.send!('ready');
    return;
  }
  console.log(`relay floor: load -> 3 relays (each the active of a third of the items, forwarding to the other two as standbys) over gRPC streams, no framework code; ${RATE} items/s open loop, ${WARMUP_S} s warm-up + ${SECONDS} s per point`);
  const points: Record<string, number>[] = [];
  for (const w of WORK_US) {
    const p = await point(w);
    points.push(p);
    console.log(`  work ${w} us per item per standby (${2 * w} in the active): machine ${p.busy_pct}% busy, p50 ${p.p50_ms} ms, p99 ${p.p99_ms} ms, p99.9 ${p.p999_ms} ms, max ${p.max_ms} ms, unanswered ${p.unanswered}`);
  }
  const base = points[0]!;
  console.log(JSON.stringify({ bench: 'relay-floor', rate_per_s: RATE, p50_ms: base.p50_ms, p99_ms: base.p99_ms, busy_pct: base.busy_pct, points }));
  process.exit(0);
}

main().catch((e) => {
  console.error(`relay-floor bench failed: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
