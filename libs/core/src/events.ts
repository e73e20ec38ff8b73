import type { CopyInfo, Role, Topology } from './model';

/** Inputs to `decide`. Time is never read inside the core; it comes with `decide(…, nowMs)`. */
export type ControllerEvent =
  | { readonly type: 'TopologyApplied'; readonly topology: Topology }
  | {
      readonly type: 'CopyRegistered';
      readonly copyId: string;
      readonly app: string;
      readonly host: string;
      readonly address: string;
      readonly incarnation: number;
    }
  | { readonly type: 'CopyHeard'; readonly copyId: string; readonly incarnation: number }
  /** A copy (or one incarnation of it) is declared failed (crash, hang, unknown state: R-HM-4). */
  | { readonly type: 'CopyFailed'; readonly copyId: string; readonly incarnation: number; readonly reason: string }
  | { readonly type: 'SwitchoverRequested'; readonly app: string; readonly rs: number; readonly toCopyId: string }
  /**
   * Live move of one RS's ACTIVE role to `toCopyId` (operator `understudy move`, load manager).
   * A caught-up STANDBY target is promoted at once (epoch+1, the old active takes its place);
   * another target first joins as an extra STANDBY and is promoted, with the source leaving the
   * RS, once the active reports it caught up (make-before-break, `AppState.moves`). DISTRIBUTED:
   * the target becomes ACTIVE at once and restores from the RS's checkpoint.
   */
  | { readonly type: 'MoveRequested'; readonly app: string; readonly rs: number; readonly toCopyId: string; readonly reason?: string }
  | { readonly type: 'DrainRequested'; readonly copyId: string }
  | { readonly type: 'CopyDisabled'; readonly copyId: string }
  | { readonly type: 'CopyEnabled'; readonly copyId: string }
  /** Graceful removal: everything moves off, then the copy is forgotten. */
  | { readonly type: 'CopyRemoved'; readonly copyId: string }
  /** This replica became leader: enter the passive phase (R-HM-3). */
  | { readonly type: 'LeadershipAcquired'; readonly passiveTimeoutMs: number }
  /**
   * The active of each listed RS has brought the named STANDBY up to date (snapshot, then the
   * update stream): it may be promoted from now on. `version` = the assignment version of the
   * member list the active replicates to; a report older than the standby's listing is ignored.
   */
  | { readonly type: 'StandbysSynced'; readonly entries: readonly SyncedStandby[] }
  /** Periodic: ends the passive phase on timeout, retries pending work. */
  | { readonly type: 'Tick' };

/** One caught-up standby, as an active copy reports it. */
export interface SyncedStandby {
  readonly app: string;
  readonly rs: number;
  readonly copyId: string;
  /** The standby's incarnation the active replicated to (a different one is a stale report). */
  readonly incarnation: number;
  readonly version: number;
  /**
   * The reporting copy. Only the RS's current ACTIVE may clear a mark: a deposed active's word
   * says nothing about the current member list. Absent: not checked (tests of the core only).
   */
  readonly reportedBy?: string;
}

/** A copy and address as commands carry them, so the shell needs no lookups. */
export interface MemberView {
  readonly copyId: string;
  readonly address: string;
  /** The copy's registered incarnation: a new one is a new process without the RS state. */
  readonly incarnation: number;
  readonly role: Role;
}

/** One RS role for one copy (mirrors the ADSM RoleEntry). */
export interface RoleEntry {
  readonly app: string;
  readonly rs: number;
  readonly role: Role;
  readonly epoch: number;
  readonly version: number;
  readonly members: readonly MemberView[];
}

/** A route change for the watch stream (R-DFM-6 names old and new active). */
export interface RouteChange {
  readonly app: string;
  readonly rs: number;
  readonly epoch: number;
  readonly active: { readonly copyId: string; readonly address: string } | null;
  readonly previous: { readonly copyId: string; readonly address: string } | null;
  readonly standbys: readonly MemberView[];
}

/**
 * Effects for the shell to run, AFTER it has persisted the returned state (persist before send:
 * a copy must never hold an epoch the store does not know).
 */
export type ControllerCommand =
  /** Changed RS roles for one copy; `full` = this is the copy's complete set (drop others). */
  | {
      readonly type: 'SetRoles';
      readonly copyId: string;
      readonly address: string;
      readonly incarnation: number;
      readonly entries: readonly RoleEntry[];
      readonly full: boolean;
    }
  | { readonly type: 'PublishRoutes'; readonly routes: readonly RouteChange[] }
  /** Ask a fenced copy to stop (isolation); it must not keep committing. */
  | { readonly type: 'StopCopy'; readonly copyId: string; readonly address: string; readonly incarnation: number; readonly reason: string };

/** Why an event was refused; the shell maps `code` to a gRPC status in one place. */
export interface Rejection {
  readonly code: 'INVALID_ARGUMENT' | 'NOT_FOUND' | 'FAILED_PRECONDITION' | 'UNAVAILABLE';
  readonly message: string;
}

/** Result of one transition. On rejection `state` is the input state and `commands` is empty. */
export interface Decision {
  readonly state: import('./model').ClusterState;
  readonly commands: readonly ControllerCommand[];
  readonly rejection?: Rejection;
  /** Human-readable summary lines (for ops RPC responses and logs). */
  readonly notes: readonly string[];
  /**
   * DrainRequested / CopyRemoved: how many RS the copy was ACTIVE resp. STANDBY for before
   * it left (all of them moved or were re-homed). Also in `notes` as `moved_active=… moved_standby=…`.
   * CopyFailed: set only when this decision declared the copy failed (the ACTIVE RS failed over);
   * absent for a stale or duplicate report.
   */
  readonly moved?: { readonly active: number; readonly standby: number };
}

/** Copy info used by the shell when it builds a full resync. */
export type { CopyInfo };
