/**
 * Where billing records end up: a directory of JSON-lines files, or a Redis stream. Both keep the
 * last written ledger sequence number of each output RS together with the records, so writing
 * the same ledger entries again (an exporter retry, a replay after a crash) writes nothing twice:
 * each billed record lands exactly once.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Redis } from 'ioredis';
import type { LedgerEntry } from './output';

/** A destination of billing records (see the module doc). */
export interface BillingSink {
  /** What it is, for people (`file …` / `redis stream …`). */
  readonly describe: string;
  /** Last ledger sequence number of output RS `rs` it holds (0: none). */
  lastSeq(rs: number): Promise<number>;
  /** Append the entries of `rs` after its last sequence number, in order; returns the new last one. */
  write(rs: number, entries: readonly LedgerEntry[]): Promise<number>;
  close(): Promise<void>;
}

/**
 * One file per output RS, `billing-rs<N>.jsonl`, one ledger entry per line. The last line tells
 * the last sequence number; a torn last line (a crash mid-write) is cut off when the file is
 * opened. One writer at a time: the directory holds a lock file with the writer's pid.
 */
export class FileSink implements BillingSink {
  readonly describe: string;
  private readonly last = new Map<number, number>();
  private readonly lockPath: string;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.describe = `files ${path.join(dir, 'billing-rs<N>.jsonl')}`;
    this.lockPath = path.join(dir, 'writer.lock');
    try {
      fs.writeFileSync(this.lockPath, String(process.pid), { flag: 'wx' });
    } catch {
      const pid = Number(fs.readFileSync(this.lockPath, 'utf8'));
      if (pidAlive(pid) && pid !== process.pid) throw new Error(`${dir} is being written by process ${pid} (remove ${this.lockPath} if it is not)`);
      fs.writeFileSync(this.lockPath, String(process.pid));
    }
  }

  file(rs: number): string {
    return path.join(this.dir, `billing-rs${rs}.jsonl`);
  }

  async lastSeq(rs: number): Promise<number> {
    let v = this.last.get(rs);
    if (v === undefined) {
      v = recoverLastSeq(this.file(rs));
      this.last.set(rs, v);
    }
    return v;
  }

  async write(rs: number, entries: readonly LedgerEntry[]): Promise<number> {
    let last = await this.lastSeq(rs);
    let text = '';
    for (const e of entries) {
      if (e.seq <= last) continue;
      text += `${JSON.stringify(e)}\n`;
      last = e.seq;
    }
    if (text !== '') {
      const fd = fs.openSync(this.file(rs), 'a');
      try {
        fs.writeSync(fd, text);
        fs.fsyncSync(fd); // on disk before the output RS is told it may drop the entries
      } finally {
        fs.closeSync(fd);
      }
      this.last.set(rs, last);
    }
    return last;
  }

  async close(): Promise<void> {
    try {
      if (Number(fs.readFileSync(this.lockPath, 'utf8')) === process.pid) fs.unlinkSync(this.lockPath);
    } catch {
      // already gone
    }
  }
}

/** Every ledger entry in the files of `dir` (tests and tools). */
export function readBillingFiles(dir: string): LedgerEntry[] {
  const out: LedgerEntry[] = [];
  for (const f of fs.readdirSync(dir).filter((n) => /^billing-rs\d+\.jsonl$/.test(n)).sort()) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) if (line !== '') out.push(JSON.parse(line) as LedgerEntry);
  }
  return out;
}

/** Last sequence number in a JSON-lines file, cutting off a torn last line. */
function recoverLastSeq(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r+');
  } catch {
    return 0;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const tail = Buffer.alloc(Math.min(size, 64 * 1024));
    fs.readSync(fd, tail, 0, tail.length, size - tail.length);
    const end = tail.lastIndexOf(0x0a); // bytes: a record id may hold any character
    if (end + 1 < tail.length) fs.ftruncateSync(fd, size - (tail.length - end - 1)); // torn line
    if (end <= 0) return 0;
    const start = tail.lastIndexOf(0x0a, end - 1);
    return (JSON.parse(tail.subarray(start + 1, end).toString('utf8')) as LedgerEntry).seq;
  } finally {
    fs.closeSync(fd);
  }
}

function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Append entries after the RS's cursor, atomically with moving the cursor (one Lua script: any
 * number of writers, retries and replays write each entry once).
 * KEYS: stream, cursor hash. ARGV: rs, maxlen, then seq/record pairs.
 */
const APPEND_SCRIPT = `
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
for i = 3, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'rs', ARGV[1], 'seq', ARGV[i], 'record', ARGV[i + 1])
    last = seq
  end
end
redis.call('HSET', KEYS[2], ARGV[1], last)
return last
`;

/** Billing records as entries of a Redis stream (`<prefix>billing`, fields `rs`, `seq`, `record`). */
export class RedisStreamSink implements BillingSink {
  readonly describe: string;
  readonly stream: string;
  private readonly cursor: string;

  /**
   * @param redis - a connected client (the caller owns it)
   * @param prefix - key prefix @param maxLen - approximate bound of the stream (XADD MAXLEN ~)
   */
  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly maxLen = 1_000_000,
  ) {
    this.stream = `${prefix}billing`;
    this.cursor = `${prefix}billing:cursor`;
    this.describe = `redis stream ${this.stream}`;
  }

  async lastSeq(rs: number): Promise<number> {
    return Number((await this.redis.hget(this.cursor, String(rs))) ?? 0);
  }

  async write(rs: number, entries: readonly LedgerEntry[]): Promise<number> {
    const args: string[] = [String(rs), String(this.maxLen)];
    for (const e of entries) args.push(String(e.seq), JSON.stringify(e));
    return Number(await this.redis.eval(APPEND_SCRIPT, 2, this.stream, this.cursor, ...args));
  }

  /** Every entry of the stream (tests and tools), in pages. */
  async readAll(): Promise<LedgerEntry[]> {
    const out: LedgerEntry[] = [];
    let from = '-';
    for (;;) {
      const page = (await this.redis.xrange(this.stream, from, '+', 'COUNT', 5000)) as [string, string[]][];
      for (const [, fields] of page) out.push(JSON.parse(fields[fields.indexOf('record') + 1]!) as LedgerEntry);
      if (page.length < 5000) return out;
      from = `(${page[page.length - 1]![0]}`;
    }
  }

  async close(): Promise<void> {
    // the client belongs to the caller
  }
}
