/**
 * Starts the whole usage-accounting deployment on one host as separate processes: a System
 * Controller (embedded store, or Redis), a Fault Manager, routers, an ALDM ingress and copies of
 * the four applications, all on 127.0.0.1. A supervisor starts a copy that exited (kill -9,
 * fenced) again, as a new incarnation with the same id. Used by `npm start` (main-job.ts) and by
 * the end-to-end test.
 */
import { ControllerClient, RoutingClient } from '@understudy/adsm';
import { CopyStatus, Role, type GetStatusResponse } from '@understudy/proto';
import { ensureError, freePort, startProcess, unaryCall, type Proc } from '@understudy/runtime';
import { STAGES, usageTopology, type Stage, type UsageTopologyOptions } from './topology';

/** Options of {@link startPipeline}. */
export interface PipelineOptions {
  /** Repository root (scripts are started from there). */
  readonly root: string;
  /** Controller's embedded store directory (unused with `redisUrl`). */
  readonly dataDir: string;
  /** The controller's store. @default embedded */
  readonly redisUrl?: string;
  /** Controller host:port. @default a free port */
  readonly controllerAddress?: string;
  /** Fault manager host:port. @default a free port */
  readonly faultManagerAddress?: string;
  /** ALDM HTTP host:port. @default a free port */
  readonly aldmHttpAddress?: string;
  /** ALDM gRPC host:port. @default a free port */
  readonly aldmAddress?: string;
  /** ALDM's payload limit (bigger events: HTTP 413 / INVALID_ARGUMENT). @default ALDM's (1 MiB) */
  readonly aldmMaxPayloadBytes?: number;
  /**
   * ALDM hands events straight to the collector's active copies (ADSM forwarder over
   * DeliverStream) instead of through the routers. @default false
   */
  readonly aldmDirect?: boolean;
  /** Router processes (ALDM and the copies' outboxes go through them). @default 2 */
  readonly routers?: number;
  /** Copies of each application. @default 3 */
  readonly copiesPerApp?: number;
  /** Passed to {@link usageTopology}. */
  readonly topology?: UsageTopologyOptions;
  /** Host id of a copy (placement spreads an RS's active and standby over hosts). @default `host-<copyId>` */
  readonly hostOf?: (copyId: string) => string;
  /** LOG_LEVEL of every process. @default warn */
  readonly logLevel?: string;
  /** Every output line of every process (e.g. to log files). */
  readonly onLine?: (process: string, line: string) => void;
  /** Things people may want to know (a copy exited and is restarted…). */
  readonly onEvent?: (message: string) => void;
  /**
   * Every process in its own process group, so a terminal's Ctrl-C reaches only the caller, which
   * stops them after draining (`npm start`). @default false
   */
  readonly ownProcessGroups?: boolean;
  /** A copy that exited is started again after this long. @default 300 */
  readonly restartDelayMs?: number;
}

/** A copy slot: the application, and the process while it runs. */
export interface CopySlot {
  readonly copyId: string;
  readonly app: Stage;
  proc: Proc | undefined;
  /** Times it was started again. */
  restarts: number;
}

/** A running deployment. */
export interface Pipeline {
  readonly controllerAddress: string;
  readonly faultManagerAddress: string;
  readonly routerAddresses: readonly string[];
  readonly aldmAddress: string;
  readonly aldmHttpAddress: string;
  /** Every copy, by id (`collector-1`, …). */
  readonly copies: ReadonlyMap<string, CopySlot>;
  readonly routers: readonly (Proc | undefined)[];
  /** Processes of the services (controller, fault manager, ALDM). */
  readonly services: readonly Proc[];
  readonly routing: RoutingClient;
  readonly ctl: ControllerClient;
  status(): Promise<GetStatusResponse>;
  /** The copy id of the ACTIVE of `app`/`rs`. */
  activeOf(app: Stage, rs: number): Promise<string | undefined>;
  /** kill -9 of a copy (the supervisor starts it again). */
  killCopy(copyId: string): Promise<void>;
  /** kill -9 of router `i`; `restart` starts it again on its address. */
  killRouter(i: number): Promise<void>;
  restartRouter(i: number): Promise<void>;
  /**
   * Resolves once every copy (of `app`, if given) is UP with roles, and every RS (of `app`) has
   * an ACTIVE and a caught-up STANDBY on UP copies: safe to kill another active.
   */
  settled(timeoutMs: number, app?: Stage): Promise<void>;
  stop(): Promise<void>;
}

const addr = async (given: string | undefined): Promise<string> => given ?? `127.0.0.1:${await freePort()}`;

/** Start everything and wait until every RS of every application has an active copy. */
export async function startPipeline(o: PipelineOptions): Promise<Pipeline> {
  const logLevel = o.logLevel ?? 'warn';
  const line = (name: string) => (l: string) => o.onLine?.(name, l);
  const event = (m: string): void => o.onEvent?.(m);
  const copiesPerApp = o.copiesPerApp ?? 3;
  const started: Proc[] = [];
  let stopping = false;
  const run = async (name: string, script: string, args: string[], readyMsg: string, env: Record<string, string> = {}, onLine = line(name)): Promise<Proc> =>
    startProcess({ name, cwd: o.root, script, args, env: { LOG_LEVEL: logLevel, ...env }, readyMsg, onLine, detached: o.ownProcessGroups ?? false });

  const controllerAddress = await addr(o.controllerAddress);
  const faultManagerAddress = await addr(o.faultManagerAddress);
  const routerAddresses = await Promise.all(Array.from({ length: o.routers ?? 2 }, () => addr(undefined)));
  const aldmAddress = await addr(o.aldmAddress);
  const aldmHttpWanted = await addr(o.aldmHttpAddress);

  const ctl = new ControllerClient({ addresses: [controllerAddress], callTimeoutMs: 10_000 });
  const routing = new RoutingClient({ controllerAddresses: [controllerAddress], deliverDeadlineMs: 15_000 });
  const copies = new Map<string, CopySlot>();
  const routers: (Proc | undefined)[] = routerAddresses.map(() => undefined);

  const stop = async (): Promise<void> => {
    stopping = true;
    routing.close();
    ctl.close();
    // Copies first (graceful), then ALDM, routers, fault manager, controller.
    const all = [...[...copies.values()].map((c) => c.proc), ...routers, ...[...started].reverse()].filter((p): p is Proc => p !== undefined);
    for (const p of all) p.signal('SIGTERM');
    await Promise.race([Promise.all(all.map((p) => p.exited)), new Promise((r) => setTimeout(r, 5000).unref())]);
    await Promise.all(all.map((p) => p.kill()));
  };

  try {
    started.push(await run('controller', 'services/system-controller/src/main.ts', ['--id', 'controller-1', '--listen', controllerAddress, '--data-dir', o.dataDir], 'controller listening', { REDIS_URL: o.redisUrl ?? '' }));
    await ctl.withLeader((c) => unaryCall(c.applyTopology.bind(c), { topology: usageTopology({ minCopies: copiesPerApp, ...o.topology }) }));
    started.push(await run('fault-manager', 'services/fault-manager/src/main.ts', ['--id', 'fm-1', '--listen', faultManagerAddress, '--controllers', controllerAddress], 'fault manager listening'));

    const startRouter = async (i: number): Promise<void> => {
      if (stopping) return;
      routers[i] = await run(`router-${i + 1}`, 'services/router/src/main.ts', ['--id', `router-${i + 1}`, '--listen', routerAddresses[i]!, '--controllers', controllerAddress, '--fault-managers', faultManagerAddress], 'router listening');
    };
    await Promise.all(routerAddresses.map((_, i) => startRouter(i)));

    const startCopy = async (slot: CopySlot): Promise<void> => {
      const p = await run(
        slot.copyId,
        'examples/usage-accounting/src/copy.ts',
        [
          slot.app,
          '--copy-id', slot.copyId,
          '--controllers', controllerAddress,
          '--host', o.hostOf?.(slot.copyId) ?? `host-${slot.copyId}`,
          '--heartbeat-interval-ms', '200',
          '--fault-managers', faultManagerAddress,
          '--routers', routerAddresses.join(','),
        ],
        'copy listening',
      );
      slot.proc = p;
      void p.exited.then(({ code, signal }) => {
        if (stopping || slot.proc !== p) return;
        slot.proc = undefined;
        event(`${slot.copyId} (pid ${p.pid}) exited (${signal ?? `code ${code}`}); starting it again`);
        void restart(slot);
      });
    };
    const restart = async (slot: CopySlot): Promise<void> => {
      for (let delay = o.restartDelayMs ?? 300; !stopping; delay = Math.min(delay * 2, 5000)) {
        await new Promise((r) => setTimeout(r, delay));
        if (stopping) return;
        try {
          await startCopy(slot);
          slot.restarts++;
          event(`${slot.copyId} is back (pid ${slot.proc?.pid})`);
          return;
        } catch (e) {
          event(`${slot.copyId} failed to start: ${ensureError(e).message.split('\n')[0]}`);
        }
      }
    };
    for (const app of STAGES) for (let i = 1; i <= copiesPerApp; i++) copies.set(`${app}-${i}`, { copyId: `${app}-${i}`, app, proc: undefined, restarts: 0 });
    await Promise.all([...copies.values()].map(startCopy));
    for (const app of STAGES) await routing.waitReady(app, 60_000);

    // ALDM last: it serves once its routing table is loaded.
    let aldmHttpAddress = '';
    const aldm = await run('aldm', 'services/aldm/src/main.ts', ['--id', 'aldm-1', '--listen', aldmAddress, '--http-listen', aldmHttpWanted, ...(o.aldmDirect ? ['--controllers', controllerAddress] : ['--routers', routerAddresses.join(',')]), ...(o.aldmMaxPayloadBytes ? ['--max-payload-bytes', String(o.aldmMaxPayloadBytes)] : [])], 'aldm listening', {}, (l) => {
      o.onLine?.('aldm', l);
      if (l.startsWith('{') && l.includes('"aldm listening"')) aldmHttpAddress = (JSON.parse(l) as { httpAddress?: string }).httpAddress ?? '';
    });
    started.push(aldm);

    const status = (): Promise<GetStatusResponse> => ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: '', includeAssignments: true }, { deadlineMs: 5000 }), 10_000);
    return {
      controllerAddress,
      faultManagerAddress,
      routerAddresses,
      aldmAddress: aldm.address,
      aldmHttpAddress,
      copies,
      routers,
      services: started,
      routing,
      ctl,
      status,
      async activeOf(app, rs) {
        const s = await status();
        return s.assignments.find((a) => a.app === app && a.rs === rs)?.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId;
      },
      async killCopy(copyId) {
        await copies.get(copyId)?.proc?.kill();
      },
      async killRouter(i) {
        const p = routers[i];
        routers[i] = undefined;
        await p?.kill();
      },
      restartRouter: startRouter,
      async settled(timeoutMs, app) {
        const deadline = Date.now() + timeoutMs;
        let why = '';
        for (;;) {
          try {
            why = settledProblem(await status(), copies, app);
            if (why === '') return;
          } catch (e) {
            why = ensureError(e).message;
          }
          if (Date.now() > deadline) throw new Error(`pipeline not settled within ${timeoutMs} ms: ${why}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** What keeps the deployment from being settled ('' when it is). */
function settledProblem(s: GetStatusResponse, copies: ReadonlyMap<string, CopySlot>, app: Stage | undefined): string {
  if (s.passive) return 'the controller is in its passive phase';
  const up = new Set(s.copies.filter((c) => c.status === CopyStatus.COPY_STATUS_UP && c.activeCount + c.standbyCount > 0).map((c) => c.copyId));
  const down = [...copies.values()].filter((c) => (app === undefined || c.app === app) && !up.has(c.copyId)).map((c) => c.copyId);
  if (down.length > 0) return `copies not up with roles: ${down.join(', ')}`;
  for (const a of s.assignments) {
    if (app !== undefined && a.app !== app) continue;
    const act = a.members.find((m) => m.role === Role.ROLE_ACTIVE);
    if (!act || !up.has(act.copyId)) return `${a.app}/${a.rs} has no active on an up copy`;
    if (a.members.filter((m) => m.role === Role.ROLE_STANDBY && up.has(m.copyId) && !m.catchingUp).length < 1) return `${a.app}/${a.rs} has no caught-up standby`;
  }
  return '';
}
