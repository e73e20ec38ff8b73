/**
 * The `understudy` ops command as a library: run it in-process ({@link runCli}), parse
 * topology files, render controller responses, and map failures to exit codes.
 */
export { runCli, processIo, parseControllerList, shortReason, DEFAULT_CONTROLLERS, CONTROLLERS_ENV, DEFAULT_TIMEOUT_MS, MOVE_TIMEOUT_MS, type CliIo } from './cli';
export {
  ExitCode,
  UsageError,
  ControllerUnreachableError,
  exitCodeForStatus,
  grpcStatusOf,
  statusName,
  describeError,
  cleanGrpcMessage,
  type ExitCodeValue,
  type DescribedError,
} from './errors';
export {
  renderStatus,
  renderLeader,
  renderApps,
  renderCopies,
  renderAssignments,
  renderEdges,
  renderApplyResult,
  renderSwitchover,
  renderMove,
  renderMoves,
  renderStandbyMoves,
  renderDrain,
  renderDisable,
  renderEnable,
  renderJson,
  toJsonView,
  formatAge,
  type RenderStatusOptions,
} from './render';
export {
  fetchLoad,
  fetchPlan,
  renderLoad,
  renderPlan,
  loadJsonView,
  planJsonView,
  verdictName,
  reasonName,
  parseLoadManagerList,
  registerLoadCommands,
  LoadManagerUnreachableError,
  LOAD_MANAGERS_ENV,
  DEFAULT_LOAD_MANAGERS,
} from './load';
export {
  loadTopologyFile,
  parseTopologyText,
  topologyFromData,
  formatOf,
  TopologyFileError,
  APP_KEYS,
  EDGE_KEYS,
  TOP_KEYS,
  MODE_NAMES,
  type TopologyFormat,
} from './topology-file';
