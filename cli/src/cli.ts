/**
 * The `understudy` ops command: parses the command line (commander), calls the controller
 * leader's ops RPCs through {@link ControllerClient}, prints tables or `--json`, and maps
 * every failure to an exit code (see {@link ExitCode}).
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { ControllerClient } from '@understudy/adsm';
import type { ControllerServiceClient } from '@understudy/proto';
import { unaryCall } from '@understudy/runtime';
import { Command, CommanderError, Option, InvalidArgumentError as CommanderArgumentError } from 'commander';
import {
  ControllerUnreachableError,
  ExitCode,
  UsageError,
  cleanGrpcMessage,
  describeError,
  grpcStatusOf,
  statusName,
  type ExitCodeValue,
} from './errors';
import {
  renderApplyResult,
  renderDisable,
  renderDrain,
  renderEnable,
  renderJson,
  renderStatus,
  renderSwitchover,
  renderMove,
} from './render';
import { loadTopologyFile } from './topology-file';
import { registerLoadCommands } from './load';

/** Where the CLI writes and what environment it reads (the process's by default; tests pass their own). */
export interface CliIo {
  /** Normal output (tables, `--json` objects, `--json` errors). */
  out(text: string): void;
  /** Human-readable errors (`understudy: …`). */
  err(text: string): void;
  /** Environment (`UNDERSTUDY_CONTROLLERS`). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Current time in Unix ms (for "last heard"). */
  now(): number;
}

/** The real process's stdout, stderr, environment and clock. */
export function processIo(): CliIo {
  return {
    out: (t) => void process.stdout.write(t),
    err: (t) => void process.stderr.write(t),
    env: process.env,
    now: () => Date.now(),
  };
}

/** Controller address used when neither `--controllers` nor `UNDERSTUDY_CONTROLLERS` is given. */
export const DEFAULT_CONTROLLERS = '127.0.0.1:7100';
/** Environment variable naming the controllers. */
export const CONTROLLERS_ENV = 'UNDERSTUDY_CONTROLLERS';
/** Default time budget of one command, in ms. */
export const DEFAULT_TIMEOUT_MS = 5000;
/** Default time budget of `move` (its target may have to catch up first), in ms. */
export const MOVE_TIMEOUT_MS = 60_000;

const ADDRESS_RE = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$/;

/** Parse `host:port[,host:port…]`; throws {@link UsageError} naming the bad entry. */
export function parseControllerList(value: string): string[] {
  const parts = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0) throw new UsageError(`--controllers: expected host:port[,host:port…], got ${JSON.stringify(value)}`);
  for (const p of parts) {
    const m = ADDRESS_RE.exec(p);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
      throw new UsageError(`--controllers: '${p}' is not host:port with a port 1..65535 (e.g. 127.0.0.1:7100)`);
    }
  }
  return [...new Set(parts)];
}

/** The global options every command takes. */
interface GlobalOptions {
  controllers: string;
  json: boolean;
  timeoutMs: number;
}

/** What one command needs to run. */
interface Context {
  readonly io: CliIo;
  readonly json: boolean;
  readonly timeoutMs: number;
  readonly addresses: readonly string[];
}

type UnaryFn<Req, Res> = Parameters<typeof unaryCall<Req, Res>>[0];

/**
 * Call one ops RPC on the leader within the command's time budget. Follower redirects and
 * dead replicas are handled by {@link ControllerClient.withLeader}. When no leader answers
 * in time the error is a {@link ControllerUnreachableError} naming every address tried.
 * A mutating call that timed out is not retried (it may have been applied).
 */
async function callLeader<Req, Res>(
  ctx: Context,
  pick: (c: ControllerServiceClient) => UnaryFn<Req, Res>,
  req: Req,
  mutating: boolean,
): Promise<Res> {
  const client = new ControllerClient({ addresses: ctx.addresses, callTimeoutMs: ctx.timeoutMs });
  const tried: string[] = [];
  const started = Date.now();
  const deadline = started + ctx.timeoutMs;
  // With several replicas one silent replica must not eat the whole budget.
  const attemptCapMs = ctx.addresses.length > 1 ? Math.max(1000, Math.floor(ctx.timeoutMs / ctx.addresses.length)) : ctx.timeoutMs;
  try {
    return await client.withLeader(async (c, address) => {
      if (!tried.includes(address)) tried.push(address);
      const deadlineMs = Math.max(1, Math.min(deadline - Date.now(), attemptCapMs));
      try {
        return await unaryCall(pick(c), req, { deadlineMs });
      } catch (e) {
        if (mutating && grpcStatusOf(e) === grpcStatus.DEADLINE_EXCEEDED) {
          throw new ControllerUnreachableError(
            `no answer from the controller at ${address} within ${deadlineMs} ms; the command may or may not have been applied (check 'understudy status') (DEADLINE_EXCEEDED)`,
            grpcStatus.DEADLINE_EXCEEDED,
            [...tried],
            e,
          );
        }
        throw e;
      }
    }, ctx.timeoutMs);
  } catch (e) {
    if (e instanceof ControllerUnreachableError) throw e;
    const code = grpcStatusOf(e);
    if (code === grpcStatus.UNAVAILABLE || code === grpcStatus.DEADLINE_EXCEEDED) {
      const reason = shortReason(e instanceof Error ? e.message : String(e), code);
      const elapsed = Date.now() - started;
      throw new ControllerUnreachableError(
        `no controller reachable: tried ${tried.length > 0 ? tried.join(', ') : ctx.addresses.join(', ')} for ${elapsed} ms (timeout ${ctx.timeoutMs} ms); last error: ${reason} (${statusName(code)})`,
        code,
        tried,
        e,
      );
    }
    throw e;
  } finally {
    client.close();
  }
}

/**
 * Shorten grpc-js transport messages: `No connection established. Last error: Error:
 * connect ECONNREFUSED 127.0.0.1:1 (…). Resolution note: ` → `connect ECONNREFUSED 127.0.0.1:1`.
 */
export function shortReason(message: string, code: grpcStatus | undefined): string {
  let m = cleanGrpcMessage(message, code);
  const conn = /Last error: (?:Error: )?(.*?)(?: \([^)]*\))?\.?(?: Resolution note:.*)?$/s.exec(m);
  if (conn && conn[1]) m = conn[1].trim();
  m = m.replace(/\s*Resolution note:.*$/s, '').trim();
  if (/^Deadline exceeded/i.test(m)) m = 'no answer before the deadline';
  return m === '' ? '(no details)' : m;
}

function positiveInt(name: string, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim())) throw new CommanderArgumentError(`${name} must be a positive integer, got '${value}'`);
    const n = Number(value);
    if (n < 1 || n > max) throw new CommanderArgumentError(`${name} must be 1..${max}, got ${n}`);
    return n;
  };
}

function rsNumber(value: string): number {
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`RS must be a resource set number (0, 1, 2 …), got '${value}'`);
  const n = Number(value);
  if (n > 0xffff_ffff) throw new UsageError(`RS must be at most ${0xffff_ffff}, got ${value}`);
  return n;
}

/** Build the command tree. `run` receives each command's work and reports its outcome. */
function buildProgram(io: CliIo, run: (cmd: Command, operation: string, work: (ctx: Context) => Promise<void>) => Promise<void>): Command {
  const program = new Command('understudy')
    .description('Operate an Understudy cluster through its System Controller')
    .version(version(), '-V, --version')
    .addOption(
      new Option('--controllers <host:port,…>', `controller replicas to try (env ${CONTROLLERS_ENV})`).default(
        io.env[CONTROLLERS_ENV]?.trim() || DEFAULT_CONTROLLERS,
      ),
    )
    .option('--json', 'machine output: the response (or the error) as one JSON object', false)
    .addOption(
      new Option('--timeout-ms <ms>', 'give up after this long (leader search included)').default(DEFAULT_TIMEOUT_MS).argParser(positiveInt('--timeout-ms', 3_600_000)),
    )
    .showSuggestionAfterError(true)
    .addHelpText(
      'after',
      `
Topology file (apply -f, YAML or JSON; unknown keys are errors):
  apps:  [{ name, mode: DISTRIBUTED|FAULT_TOLERANT|DISTRIBUTED_FAULT_TOLERANT, rsCount, standbys, minCopies }]
  edges: [{ from, to, keyField }]

Exit codes:
  0 ok   1 other failure   2 usage or bad file (INVALID_ARGUMENT)   3 not found (NOT_FOUND)
  4 refused in this state (FAILED_PRECONDITION)   5 no controller reachable / no answer in time`,
    )
    .exitOverride();

  program
    .command('status')
    .description('leader, applications, copies (and per-RS assignments)')
    .option('--app <name>', 'only this application')
    .option('--assignments', 'also show every RS: epoch, active, standbys, out of service', false)
    .action(async (opts: { app?: string; assignments: boolean }, cmd: Command) =>
      run(cmd, 'status', async (ctx) => {
        const res = await callLeader(ctx, (c) => c.getStatus.bind(c), { app: opts.app ?? '', includeAssignments: opts.assignments }, false);
        ctx.io.out(ctx.json ? renderJson(res) : renderStatus(res, { assignments: opts.assignments, nowMs: ctx.io.now() }));
      }),
    );

  program
    .command('apply')
    .description('declare or change applications and the data-flow map from a YAML or JSON file')
    .requiredOption('-f, --file <path>', 'topology file (.yaml, .yml or .json)')
    .option('--dry-run', 'only check the file and print what would be sent', false)
    .action(async (opts: { file: string; dryRun: boolean }, cmd: Command) =>
      run(cmd, 'apply', async (ctx) => {
        const topology = await loadTopologyFile(opts.file);
        if (opts.dryRun) {
          ctx.io.out(ctx.json ? renderJson({ topology }) : `${opts.file} is valid: ${topology.apps.length} application(s), ${topology.edges.length} edge(s) (not applied: --dry-run)\n`);
          return;
        }
        const res = await callLeader(ctx, (c) => c.applyTopology.bind(c), { topology }, true);
        ctx.io.out(ctx.json ? renderJson(res) : renderApplyResult(opts.file, res));
      }),
    );

  program
    .command('switchover')
    .description('move the active role of one RS to one of its standbys')
    .argument('<app>', 'application')
    .argument('<rs>', 'resource set number')
    .requiredOption('--to <copy>', 'the standby copy to make active')
    .action(async (app: string, rsText: string, opts: { to: string }, cmd: Command) =>
      run(cmd, 'switchover', async (ctx) => {
        const rs = rsNumber(rsText);
        const res = await callLeader(ctx, (c) => c.switchover.bind(c), { app, rs, toCopyId: opts.to }, true);
        ctx.io.out(ctx.json ? renderJson(res) : renderSwitchover(app, rs, res));
      }),
    );

  program
    .command('move')
    .description('move the active role of one RS to another copy, live (pause, hand over, resume)')
    .argument('<app>', 'application')
    .argument('<rs>', 'resource set number')
    .argument('<copy>', 'the copy to make active (a standby of the RS, or any UP copy: it catches up first)')
    .option('--reason <text>', 'why (logged by the controller)', '')
    .action(async (app: string, rsText: string, copyId: string, opts: { reason: string }, cmd: Command) =>
      run(cmd, 'move', async (ctx) => {
        const rs = rsNumber(rsText);
        // A target that must catch up first can take a while: unless --timeout-ms was given, wait up to a minute.
        const timeoutMs = cmd.parent?.getOptionValueSource('timeoutMs') === 'default' ? MOVE_TIMEOUT_MS : ctx.timeoutMs;
        const res = await callLeader({ ...ctx, timeoutMs }, (c) => c.moveRs.bind(c), { app, rs, toCopyId: copyId, reason: opts.reason }, true);
        ctx.io.out(ctx.json ? renderJson(res) : renderMove(app, rs, res));
      }),
    );

  program
    .command('drain')
    .description('move every RS off a copy gracefully; it then holds nothing until enabled')
    .argument('<copy>', 'copy id')
    .action(async (copyId: string, _opts: unknown, cmd: Command) =>
      run(cmd, 'drain', async (ctx) => {
        const res = await callLeader(ctx, (c) => c.drainCopy.bind(c), { copyId }, true);
        ctx.io.out(ctx.json ? renderJson(res) : renderDrain(copyId, res));
      }),
    );

  program
    .command('disable')
    .description('take a copy out of service at once (fenced); its RS fail over')
    .argument('<copy>', 'copy id')
    .action(async (copyId: string, _opts: unknown, cmd: Command) =>
      run(cmd, 'disable', async (ctx) => {
        const res = await callLeader(ctx, (c) => c.disableCopy.bind(c), { copyId }, true);
        ctx.io.out(ctx.json ? renderJson(res) : renderDisable(copyId, res));
      }),
    );

  program
    .command('enable')
    .description('return a drained or disabled copy to service')
    .argument('<copy>', 'copy id')
    .action(async (copyId: string, _opts: unknown, cmd: Command) =>
      run(cmd, 'enable', async (ctx) => {
        const res = await callLeader(ctx, (c) => c.enableCopy.bind(c), { copyId }, true);
        ctx.io.out(ctx.json ? renderJson(res) : renderEnable(copyId, res));
      }),
    );

  registerLoadCommands(program, io, run);

  for (const sub of program.commands) sub.exitOverride().showSuggestionAfterError(true);
  return program;
}

function version(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('../package.json') as { version: string }).version;
}

/** Print a failure: `understudy: …` on stderr, or `{"error":{code,message}}` on stdout with `--json`. */
function report(io: CliIo, json: boolean, code: string, message: string): void {
  if (json) io.out(`${JSON.stringify({ error: { code, message } })}\n`);
  else io.err(`understudy: ${message}\n`);
}

/**
 * Run the CLI with `argv` (without `node` and the script) and resolve with the exit code.
 * Never rejects and never calls `process.exit`.
 *
 * @example
 * const code = await runCli(['--controllers', '127.0.0.1:7100', 'status', '--json']);
 */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<ExitCodeValue> {
  let exitCode: ExitCodeValue = ExitCode.OK;
  // Before commander has parsed anything, `--json` is found by looking (used for usage errors).
  const jsonRequested = argv.includes('--json');
  let helpText = '';

  const run = async (cmd: Command, operation: string, work: (ctx: Context) => Promise<void>): Promise<void> => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    try {
      const ctx: Context = { io, json: g.json, timeoutMs: g.timeoutMs, addresses: parseControllerList(g.controllers) };
      await work(ctx);
      exitCode = ExitCode.OK;
    } catch (e) {
      const d = describeError(e, operation);
      report(io, g.json, d.code, d.message);
      exitCode = d.exitCode;
    }
  };

  const program = buildProgram(io, run);
  program.configureOutput({
    writeOut: (s) => io.out(s),
    // Help shown because of an error (e.g. no command) is kept and printed by us below.
    writeErr: (s) => {
      helpText += s;
    },
    outputError: () => undefined,
  });

  if (argv.length === 0) {
    io.err(`${program.helpInformation()}`);
    report(io, false, 'INVALID_ARGUMENT', 'no command given (status, apply, switchover, move, drain, disable, enable)');
    return ExitCode.USAGE;
  }

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return ExitCode.OK; // --help, --version
      if (e.code === 'commander.help') {
        // A command group without a subcommand: commander printed help as an error.
        io.err(helpText);
        return ExitCode.USAGE;
      }
      const message = `${e.message.replace(/^error: /, '')} (see 'understudy --help')`;
      report(io, jsonRequested, 'INVALID_ARGUMENT', message);
      return ExitCode.USAGE;
    }
    const d = describeError(e, 'understudy');
    report(io, jsonRequested, d.code, d.message);
    return d.exitCode === ExitCode.OK ? ExitCode.FAILURE : d.exitCode;
  }
}
