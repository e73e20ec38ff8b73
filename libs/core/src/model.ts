/**
 * The cluster model the decision core works on. Plain data, JSON-serialisable, treated as
 * immutable: a transition returns a new state sharing unchanged parts with the old one.
 */

/** Role of one copy for one RS. */
export type Role = 'ACTIVE' | 'STANDBY' | 'OUT_OF_SERVICE';

import type { DetectionPolicy } from './detection';
import type { PartitioningName } from './partition';

/** Redundancy mode of an application (see SPEC vocabulary). */
export type Mode = 'DISTRIBUTED' | 'FAULT_TOLERANT' | 'DISTRIBUTED_FAULT_TOLERANT';

/** Controller-side status of a copy. Only `UP` copies receive assignments. */
export type CopyStatus = 'UP' | 'DRAINED' | 'DISABLED' | 'OUT_OF_SERVICE';

/** A declared application. */
export interface AppSpec {
  readonly name: string;
  readonly mode: Mode;
  /** Number of resource sets, RS ids are 0..rsCount-1. */
  readonly rsCount: number;
  /**
   * DISTRIBUTED_FAULT_TOLERANT: standbys per RS (k). FAULT_TOLERANT: standby copies (1..N).
   * DISTRIBUTED: must be 0.
   */
  readonly standbys: number;
  /** Copies of this app that must be UP before the initial distribution happens. */
  readonly minCopies: number;
  /** How the fault manager watches the app's copies (absent: defaults). */
  readonly detection?: DetectionPolicy;
  /** How keys map to RS (see `rsOfKey`). Absent: `HASH`. Fixed once the app is declared. */
  readonly partitioning?: PartitioningName;
  /**
   * RANGE only: `rsCount - 1` split keys, strictly increasing by code point; RS 0 takes the keys
   * below the first, RS i the keys from `rangeStarts[i-1]` up to (excluding) `rangeStarts[i]`.
   * Absent (or empty) for HASH.
   */
  readonly rangeStarts?: readonly string[];
  /**
   * Shared data (R-ADSM): the RS whose committed state every copy of the app follows and hands
   * to its handlers read-only (`ctx.shared`), e.g. a rate table. An integer in `0..rsCount-1`;
   * absent: the app shares nothing. Fixed once the app is declared.
   */
  readonly sharedMasterRs?: number;
}

/** A data-flow map edge (R-DFM-1). */
export interface Edge {
  readonly from: string;
  readonly to: string;
  readonly keyField: string;
}

/** Declared topology: the input of ApplyTopology. */
export interface Topology {
  readonly apps: readonly AppSpec[];
  readonly edges: readonly Edge[];
}

/** One running process of an application, as the controller knows it. */
export interface CopyInfo {
  readonly copyId: string;
  readonly app: string;
  readonly host: string;
  /** host:port of the copy's ADSM service. */
  readonly address: string;
  /** Increases on every start of the copy; a new one means the old process is gone. */
  readonly incarnation: number;
  readonly status: CopyStatus;
  readonly registeredAtMs: number;
  readonly lastHeardAtMs: number;
  /**
   * True when the current incarnation was declared failed while the copy kept an operator status
   * (DRAINED / DISABLED survive failures). Such a process is dead: it gets no roles, cannot be
   * enabled, and returns only by registering a new incarnation (which clears the flag). Absent
   * otherwise; an OUT_OF_SERVICE copy is failed by definition.
   */
  readonly failed?: boolean;
}

/** One entry of an RS's ordered member list. */
export interface Member {
  readonly copyId: string;
  readonly role: Role;
}

/**
 * Assignment of one RS. `members` is ordered: the ACTIVE first (if any), then STANDBYs in
 * promotion order, then OUT_OF_SERVICE copies (R-DFM-4: a failed copy goes to the end).
 */
export interface RsAssignment {
  readonly app: string;
  readonly rs: number;
  /** Fencing token; strictly increases on every activation of this RS. 0 = never activated. */
  readonly epoch: number;
  /** Strictly increases on every change of `members` or `epoch`. */
  readonly version: number;
  readonly members: readonly Member[];
}

/** Per-application state. */
export interface AppState {
  readonly spec: AppSpec;
  /** True once the initial distribution has run (minCopies reached). */
  readonly activated: boolean;
  /** Indexed by RS id; length === spec.rsCount. */
  readonly rs: readonly RsAssignment[];
  /**
   * True when balancing stopped early because the remaining moves would promote standbys added
   * in the same decision (they hold no state yet): the next `Tick` resumes balancing. Absent
   * otherwise.
   */
  readonly balancePending?: boolean;
  /**
   * STANDBYs still catching up, per RS id: copy id → the assignment version that listed it
   * (absent when none). A standby added to an RS that already served (epoch ≥ 1), or a replaced
   * process re-listed, holds none of the RS state until the active has sent it a snapshot and
   * reported it caught up (`StandbysSynced`). Until then it is promoted only when no caught-up
   * standby is left, and balancing never swaps an active onto it. Once caught up a standby stays
   * caught up while it stays listed: the active acknowledges nothing before every listed
   * standby applied it.
   */
  readonly syncing?: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /**
   * Live moves of an RS's ACTIVE role (`MoveRequested`, issue 5) waiting for their target to
   * catch up, per RS id (absent when none). Make-before-break: the target is listed as an extra
   * STANDBY (one above the replication factor) until the active reports it caught up; then it
   * is promoted and the source copy leaves the RS. Balancing leaves such an RS alone.
   */
  readonly moves?: Readonly<Record<string, PendingMove>>;
  /**
   * Balancing's standby moves waiting for their new standby to catch up, per RS id (absent when
   * none). Make-before-break: the leaving STANDBY stays listed (one above the replication
   * factor) until the active reports the new one caught up, so a failure of the active inside
   * that window still promotes a standby that holds every acknowledged update. Balancing counts
   * the move as done. A move whose members change otherwise is dropped.
   */
  readonly standbyMoves?: Readonly<Record<string, StandbyMove>>;
}

/** One standby move waiting for its new standby to catch up (see `AppState.standbyMoves`). */
export interface StandbyMove {
  /** The STANDBY that leaves the RS once `toCopyId` is caught up. */
  readonly fromCopyId: string;
  /** The new STANDBY (catching up meanwhile). */
  readonly toCopyId: string;
  /** Decision time the move started (abandoned on a Tick after the catch-up timeout). */
  readonly sinceMs: number;
}

/** One RS move waiting for its target to catch up (see `AppState.moves`). */
export interface PendingMove {
  /** The copy that becomes ACTIVE (listed as STANDBY meanwhile). */
  readonly toCopyId: string;
  /** The ACTIVE copy the RS moves away from. */
  readonly fromCopyId: string;
  /** Decision time the move started (a move that never completes is abandoned on a Tick). */
  readonly sinceMs: number;
  /** Why (operator, load manager, drain), for status and logs. */
  readonly reason?: string;
}

/** Leadership phase of the controller replica that owns this state (R-HM-3). */
export interface LeaderPhase {
  /** While true: no recovery, no balancing, ops refused with UNAVAILABLE. */
  readonly passive: boolean;
  /** Copies not yet heard from since leadership was acquired. */
  readonly awaiting: readonly string[];
  /** The passive phase ends at this time even if some copies stay silent. */
  readonly passiveUntilMs: number;
}

/** Everything the controller decides on; persisted (fenced) after every change. */
export interface ClusterState {
  /** Strictly increases on every change; persisted with the state. */
  readonly version: number;
  readonly apps: Readonly<Record<string, AppState>>;
  readonly copies: Readonly<Record<string, CopyInfo>>;
  readonly edges: readonly Edge[];
  readonly leader: LeaderPhase;
}
