/**
 * @understudy/core — the pure decision core of the System Controller (DESIGN §3): cluster
 * model, `decide(state, event, now)`, placement, and read-side helpers. No I/O, no clock.
 */
export type { AppSpec, AppState, ClusterState, CopyInfo, CopyStatus, Edge, LeaderPhase, Member, Mode, PendingMove, Role, RsAssignment, StandbyMove, Topology } from './model';
export type { ControllerCommand, ControllerEvent, Decision, MemberView, Rejection, RoleEntry, RouteChange, SyncedStandby } from './events';
export { decide, MAX_SYNCED_ENTRIES, MOVE_CATCH_UP_TIMEOUT_MS } from './decide';
export { validateTopology, APP_NAME_RE, MAX_RS_COUNT, MAX_STANDBYS } from './validate';
export { keyToRs } from './hash';
export { rsOfKey, compareKeys, validatePartitioning, PARTITIONINGS, MAX_RANGE_START_LENGTH, type KeyPartition, type PartitioningName } from './partition';
export { emptyState, routesOf, fullRoleSet, copyLoads } from './views';
export { checkInvariants, checkBalance, checkSpread } from './invariants';
export { placeInitial, spreadOrder } from './placement';
export { MAX_OOS_ENTRIES } from './members';
export { compileDetectionPolicy, validateDetectionPolicy, DETECTION_DEFAULTS, type DetectionPolicy, type CompiledDetectionPolicy } from './detection';
export {
  planLoad,
  fitTrend,
  compileLoadPlanOptions,
  LOAD_PLAN_DEFAULTS,
  type LoadPlanInput,
  type LoadPlanOptions,
  type CompiledLoadPlanOptions,
  type LoadPlan,
  type PlannedMove,
  type MoveReason,
  type MoveRef,
  type RecentMove,
  type CopyLoadSample,
  type CopyLoadSeries,
  type RsLoadSample,
  type RsLoadSeries,
  type PlacementApp,
  type PlacementCopy,
  type PlacementRs,
  type CopyLoadView,
  type CopyVerdict,
  type RsLoadView,
  type AppLoadView,
  type TrendFit,
} from './load-plan';
export { createDetector, detect, nextDeadline, watchedCopies, watchedCopy, MAX_WATCHED_COPIES, MAX_OUTSTANDING_PROBES, type DetectorState, type DetectorOptions, type DetectorEvent, type DetectorStep, type DetectorRejection, type FaultReport, type FaultReportKind, type ReportedCopy, type CopyIdentity, type HealthSample, type ProbeDue, type WatchedCopyView } from './detector';
