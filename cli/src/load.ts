/**
 * `understudy load` and `understudy plan`: what the Load Manager sees (per-copy and per-RS load)
 * and what it would do now and why (a dry run of its planner). Several load managers may run, one
 * per group of applications: every configured instance is asked and, per application, the answer
 * of the instance that has load data for most of its copies is shown.
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import Table from 'cli-table3';
import {
  LoadManagerServiceClient,
  LoadVerdict,
  MoveReason,
  copyStatusName,
  type CopyLoad,
  type GetLoadResponse,
  type GetPlanResponse,
  type LoadMove,
} from '@understudy/proto';
import { clientChannelOptions, insecureCredentials, isRetryable, unaryCall, fromServiceError } from '@understudy/runtime';
import { Option, type Command } from 'commander';
import { UsageError, grpcStatusOf } from './errors';
import { formatAge, renderJson } from './render';
import type { CliIo } from './cli';

/** Environment variable naming the load managers. */
export const LOAD_MANAGERS_ENV = 'UNDERSTUDY_LOAD_MANAGERS';
/** Load manager address used when neither `--load-managers` nor the env var is given. */
export const DEFAULT_LOAD_MANAGERS = '127.0.0.1:7400';

const ADDRESS_RE = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$/;

/** Parse `host:port[,host:port…]` for `--load-managers`; throws {@link UsageError} naming the bad entry. */
export function parseLoadManagerList(value: string): string[] {
  const parts = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0) throw new UsageError(`--load-managers: expected host:port[,host:port…], got ${JSON.stringify(value)}`);
  for (const p of parts) {
    const m = ADDRESS_RE.exec(p);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UsageError(`--load-managers: '${p}' is not host:port with a port 1..65535 (e.g. 127.0.0.1:7400)`);
  }
  return [...new Set(parts)];
}

/** No load manager answered; `grpcCode` is UNAVAILABLE or DEADLINE_EXCEEDED. */
export class LoadManagerUnreachableError extends Error {
  constructor(
    message: string,
    readonly grpcCode: grpcStatus,
  ) {
    super(message);
    this.name = 'LoadManagerUnreachableError';
  }
}

type Method = 'getLoad' | 'getPlan';
type ResponseOf<M extends Method> = M extends 'getLoad' ? GetLoadResponse : GetPlanResponse;

/**
 * Ask every load manager in parallel. Resolves with the answers of those that answered; rejects
 * with a refusal (bad app name, unknown app) when every instance refused, or with
 * {@link LoadManagerUnreachableError} when none answered.
 */
async function askAll<M extends Method>(addresses: readonly string[], method: M, app: string, timeoutMs: number): Promise<ResponseOf<M>[]> {
  const results = await Promise.allSettled(
    addresses.map(async (address) => {
      const client = new LoadManagerServiceClient(address, insecureCredentials(), clientChannelOptions());
      try {
        const fn = client[method].bind(client) as unknown as Parameters<typeof unaryCall<{ app: string }, ResponseOf<M>>>[0];
        return await unaryCall(fn, { app }, { deadlineMs: timeoutMs });
      } finally {
        client.close();
      }
    }),
  );
  const ok = results.filter((r): r is PromiseFulfilledResult<Awaited<ResponseOf<M>>> => r.status === 'fulfilled').map((r) => r.value);
  if (ok.length > 0) return ok;
  const errors = results.map((r) => fromServiceError((r as PromiseRejectedResult).reason));
  const refusal = errors.find((e) => !isRetryable(e));
  if (refusal) throw refusal;
  const code = grpcStatusOf(errors[0]) ?? grpcStatus.UNAVAILABLE;
  const reasons = errors.map((e, i) => `${addresses[i]}: ${e.message.replace(/^\d+ [A-Z_]+: /, '').split('\n')[0]}`);
  throw new LoadManagerUnreachableError(`no load manager answered within ${timeoutMs} ms (${reasons.join('; ')})`, code === grpcStatus.DEADLINE_EXCEEDED ? code : grpcStatus.UNAVAILABLE);
}

/** Per app: the index of the answer with most copies holding load data. */
function bestPerApp(answers: readonly { copies: readonly CopyLoad[]; apps: readonly { app: string }[] }[]): Map<string, number> {
  const out = new Map<string, { i: number; n: number }>();
  answers.forEach((a, i) => {
    const apps = new Set([...a.apps.map((x) => x.app), ...a.copies.map((c) => c.app)]);
    for (const app of apps) {
      const n = a.copies.filter((c) => c.app === app && c.verdict !== LoadVerdict.LOAD_VERDICT_NO_DATA).length;
      const cur = out.get(app);
      if (!cur || n > cur.n) out.set(app, { i, n });
    }
  });
  return new Map([...out].map(([k, v]) => [k, v.i]));
}

/** Per-copy and per-RS load, merged over the load managers (see module doc). */
export async function fetchLoad(addresses: readonly string[], app: string, timeoutMs: number): Promise<GetLoadResponse> {
  const answers = await askAll(addresses, 'getLoad', app, timeoutMs);
  if (answers.length === 1) return answers[0]!;
  const best = bestPerApp(answers);
  const pick = <T extends { app: string }>(f: (r: GetLoadResponse) => readonly T[]): T[] => answers.flatMap((r, i) => f(r).filter((x) => best.get(x.app) === i));
  return {
    loadManagerId: [...new Set([...best.values()].map((i) => answers[i]!.loadManagerId))].join(','),
    atUnixMs: Math.max(...answers.map((r) => r.atUnixMs)),
    copies: pick((r) => r.copies),
    rs: pick((r) => r.rs),
    apps: pick((r) => r.apps),
    placementUnixMs: Math.min(...answers.map((r) => r.placementUnixMs)),
  };
}

/** The plan, merged over the load managers (see module doc). */
export async function fetchPlan(addresses: readonly string[], app: string, timeoutMs: number): Promise<GetPlanResponse> {
  const answers = await askAll(addresses, 'getPlan', app, timeoutMs);
  if (answers.length === 1) return answers[0]!;
  const best = bestPerApp(answers);
  const used = [...new Set(best.values())].sort((a, b) => a - b);
  const pick = <T extends { app: string }>(f: (r: GetPlanResponse) => readonly T[]): T[] => answers.flatMap((r, i) => f(r).filter((x) => best.get(x.app) === i));
  return {
    loadManagerId: used.map((i) => answers[i]!.loadManagerId).join(','),
    atUnixMs: Math.max(...answers.map((r) => r.atUnixMs)),
    dryRun: used.every((i) => answers[i]!.dryRun),
    blocked: [...new Set(used.map((i) => answers[i]!.blocked).filter(Boolean))].join('; '),
    moves: pick((r) => r.moves),
    copies: pick((r) => r.copies),
    apps: pick((r) => r.apps),
    summary: [...new Set(used.flatMap((i) => answers[i]!.summary))],
    recentMoves: answers.flatMap((r) => r.recentMoves).sort((a, b) => a.startedUnixMs - b.startedUnixMs),
  };
}

// ---- rendering ---------------------------------------------------------------------------------

function table(head: string[]): Table.Table {
  return new Table({ head, style: { head: [], border: [], compact: false } });
}

const VERDICT_NAMES: Record<number, string> = {
  [LoadVerdict.LOAD_VERDICT_OVER]: 'OVER',
  [LoadVerdict.LOAD_VERDICT_SATURATED]: 'SATURATED',
  [LoadVerdict.LOAD_VERDICT_RISING]: 'RISING',
  [LoadVerdict.LOAD_VERDICT_OK]: 'OK',
  [LoadVerdict.LOAD_VERDICT_UNDER]: 'UNDER',
  [LoadVerdict.LOAD_VERDICT_NO_DATA]: 'NO_DATA',
  [LoadVerdict.LOAD_VERDICT_INELIGIBLE]: 'INELIGIBLE',
};
const REASON_NAMES: Record<number, string> = {
  [MoveReason.MOVE_REASON_IMBALANCE]: 'IMBALANCE',
  [MoveReason.MOVE_REASON_SATURATED]: 'SATURATED',
  [MoveReason.MOVE_REASON_ANTICIPATION]: 'ANTICIPATION',
};

/** Verdict name (`OVER`, `NO_DATA` …). */
export function verdictName(v: LoadVerdict): string {
  return VERDICT_NAMES[v] ?? `UNSPECIFIED(${v})`;
}
/** Move reason name (`IMBALANCE` …). */
export function reasonName(r: MoveReason): string {
  return REASON_NAMES[r] ?? `UNSPECIFIED(${r})`;
}

const pct = (u: number): string => `${(u * 100).toFixed(1)}%`;
const rate = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const bytes = (n: number): string => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);

function copiesTable(copies: readonly CopyLoad[], nowMs: number): string {
  if (copies.length === 0) return 'no copies';
  const t = table(['app', 'copy', 'status', 'verdict', 'active RS', 'msg/s', 'cpu %', 'lag ms', 'queue', 'capacity msg/s', 'utilization', 'projected', 'last report']);
  for (const c of copies) {
    const data = c.verdict !== LoadVerdict.LOAD_VERDICT_NO_DATA && c.verdict !== LoadVerdict.LOAD_VERDICT_INELIGIBLE;
    t.push([
      c.app,
      c.copyId,
      copyStatusName(c.status) ?? `UNSPECIFIED(${c.status})`,
      verdictName(c.verdict),
      String(c.activeRs),
      data ? rate(c.msgsPerS) : '-',
      data ? c.cpuPercent.toFixed(1) : '-',
      data ? c.eventLoopLagMs.toFixed(1) : '-',
      data ? String(c.queueDepth) : '-',
      data ? rate(c.capacityMsgsPerS) : '-',
      data ? pct(c.utilization) : '-',
      data ? pct(c.projected) : '-',
      formatAge(c.lastReportUnixMs, nowMs),
    ]);
  }
  return t.toString();
}

/** `understudy load`: copies, then RS. */
export function renderLoad(r: GetLoadResponse, nowMs: number): string {
  const head = `Load as seen by load manager ${r.loadManagerId} (placement read ${formatAge(r.placementUnixMs, nowMs)})`;
  const rs = table(['app', 'RS', 'active', 'msg/s', 'trend msg/s²', 'state', 'last report', 'locked']);
  for (const x of r.rs) {
    rs.push([
      x.app,
      String(x.rs),
      x.activeCopyId || '(none)',
      rate(x.msgsPerS),
      `${x.slopePerS >= 0 ? '+' : ''}${x.slopePerS.toFixed(2)}`,
      bytes(x.stateBytes),
      formatAge(x.lastReportUnixMs, nowMs),
      x.lockedUntilUnixMs > nowMs ? `${((x.lockedUntilUnixMs - nowMs) / 1000).toFixed(0)}s more` : '-',
    ]);
  }
  const apps = r.apps.map((a) => `  ${a.app}: ${a.explanation}`).join('\n');
  return `${head}\n\nCopies\n${copiesTable(r.copies, nowMs)}\n\nResource sets\n${r.rs.length > 0 ? rs.toString() : 'no RS'}${apps ? `\n\nApplications\n${apps}` : ''}\n`;
}

function moveRow(m: LoadMove | undefined): string[] {
  if (!m) return ['?', '?', '?', '?', '?'];
  return [`${m.app}/${m.rs}`, `${m.fromCopyId} -> ${m.toCopyId}`, reasonName(m.reason), m.promotion ? 'promotion' : 'state transfer', rate(m.msgsPerS)];
}

/** `understudy plan`: what the load manager would do now and why. */
export function renderPlan(r: GetPlanResponse, nowMs: number): string {
  const out: string[] = [`Plan of load manager ${r.loadManagerId}${r.dryRun ? ' (dry run: it only plans)' : ''}`];
  if (r.blocked) out.push(`BLOCKED: ${r.blocked}`);
  if (r.moves.length === 0) out.push(`\nMoves\nnone: ${r.summary.join('; ') || 'no move needed'}`);
  else {
    const t = table(['RS', 'move', 'reason', 'kind', 'msg/s', 'why']);
    for (const m of r.moves) t.push([...moveRow(m), m.detail]);
    out.push(`\nMoves\n${t.toString()}`);
  }
  if (r.copies.length > 0) {
    const t = table(['app', 'copy', 'verdict', 'utilization', 'projected', 'after plan', 'why']);
    for (const c of r.copies) {
      const data = c.verdict !== LoadVerdict.LOAD_VERDICT_NO_DATA && c.verdict !== LoadVerdict.LOAD_VERDICT_INELIGIBLE;
      t.push([c.app, c.copyId, verdictName(c.verdict), data ? pct(c.utilization) : '-', data ? pct(c.projected) : '-', data ? pct(c.plannedUtilization) : '-', c.explanation]);
    }
    out.push(`\nCopies\n${t.toString()}`);
  }
  if (r.apps.length > 0) out.push(`\nApplications\n${r.apps.map((a) => `  ${a.app}: ${a.explanation}`).join('\n')}`);
  if (r.recentMoves.length > 0) {
    const t = table(['started', 'RS', 'move', 'reason', 'kind', 'msg/s', 'outcome', 'pause ms']);
    for (const x of r.recentMoves) {
      t.push([formatAge(x.startedUnixMs, nowMs), ...moveRow(x.move), x.finishedUnixMs === 0 ? 'under way' : x.outcome, x.outcome === 'ok' ? x.pauseMs.toFixed(2) : '-']);
    }
    out.push(`\nRecent moves\n${t.toString()}`);
  }
  return `${out.join('\n')}\n`;
}

/** `--json` view of a load response: enums as names. */
export function loadJsonView(r: GetLoadResponse): unknown {
  return { ...r, copies: r.copies.map(copyJson) };
}

/** `--json` view of a plan: enums as names. */
export function planJsonView(r: GetPlanResponse): unknown {
  const move = (m: LoadMove | undefined): unknown => (m ? { ...m, reason: reasonName(m.reason) } : undefined);
  return { ...r, moves: r.moves.map(move), copies: r.copies.map(copyJson), recentMoves: r.recentMoves.map((x) => ({ ...x, move: move(x.move) })) };
}

function copyJson(c: CopyLoad): unknown {
  return { ...c, verdict: verdictName(c.verdict) };
}

// ---- commands ----------------------------------------------------------------------------------

/** What a load command needs from the CLI's runner. */
interface LoadContext {
  readonly io: CliIo;
  readonly json: boolean;
  readonly timeoutMs: number;
}

type Runner = (cmd: Command, operation: string, work: (ctx: LoadContext) => Promise<void>) => Promise<void>;

/** Add `load` and `plan` to the program. */
export function registerLoadCommands(program: Command, io: CliIo, run: Runner): void {
  const lmOption = (): Option =>
    new Option('--load-managers <host:port,…>', `load managers to ask (env ${LOAD_MANAGERS_ENV})`).default(io.env[LOAD_MANAGERS_ENV]?.trim() || DEFAULT_LOAD_MANAGERS);
  program
    .command('load')
    .description('per-copy and per-RS load as the load manager sees it')
    .option('--app <name>', 'only this application')
    .addOption(lmOption())
    .action(async (opts: { app?: string; loadManagers: string }, cmd: Command) =>
      run(cmd, 'load', async (ctx) => {
        const res = await fetchLoad(parseLoadManagerList(opts.loadManagers), opts.app ?? '', ctx.timeoutMs);
        ctx.io.out(ctx.json ? renderJson(loadJsonView(res)) : renderLoad(res, ctx.io.now()));
      }),
    );
  program
    .command('plan')
    .description('what the load manager would move now, and why (a dry run)')
    .option('--app <name>', 'only this application')
    .addOption(lmOption())
    .action(async (opts: { app?: string; loadManagers: string }, cmd: Command) =>
      run(cmd, 'plan', async (ctx) => {
        const res = await fetchPlan(parseLoadManagerList(opts.loadManagers), opts.app ?? '', ctx.timeoutMs);
        ctx.io.out(ctx.json ? renderJson(planJsonView(res)) : renderPlan(res, ctx.io.now()));
      }),
    );
}
