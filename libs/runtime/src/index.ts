/**
 * @understudy/runtime — what every Understudy process shares: errors and their gRPC
 * mapping, gRPC server/client helpers, config, logging, telemetry and the store.
 *
 * Entry files call `startTelemetry` before creating any gRPC server or client (see
 * telemetry.ts).
 */
export {
  UnderstudyError,
  TerminalError,
  RetryableError,
  InvalidArgumentError,
  NotFoundError,
  FailedPreconditionError,
  ResourceExhaustedError,
  PermissionDeniedError,
  FencedError,
  StaleEpochError,
  NotActiveError,
  UnavailableError,
  DeadlineExceededError,
  AbortedError,
  StoreUnavailableError,
  ErrorReason,
  REASON_METADATA_KEY,
  LEADER_ADDRESS_METADATA_KEY,
  ERROR_METADATA_PREFIX,
  INTERNAL_ERROR_DETAILS,
  ensureError,
  toServiceError,
  fromServiceError,
  isRetryable,
  type UnderstudyErrorOptions,
  type ServiceErrorParts,
} from './errors';
export {
  startGrpcServer,
  unaryHandler,
  unaryCall,
  clientChannelOptions,
  insecureCredentials,
  type GrpcServer,
  type GrpcServerOptions,
  type GrpcServiceBinding,
  type UnaryMethod,
  type UnaryCallOptions,
  type ClientChannelTuning,
} from './grpc';
export {
  defineConfig,
  loadConfig,
  configHelp,
  ConfigError,
  type ConfigSchema,
  type ConfigField,
  type ConfigOf,
  type FieldValue,
  type StringField,
  type IntField,
  type MsField,
  type BoolField,
  type EnumField,
  type LoadConfigSources,
} from './config';
export { withSafeDeserialize, malformedReason } from './malformed';
export { ClientCache } from './client-cache';
export { ChangeSignal } from './signal';
export { startProcess, freePort, type Proc, type StartOptions } from './supervise';
export { createLogger, silentLogger, LOG_LEVELS, type Logger, type LoggerOptions, type LogLevel } from './logging';
export { startTelemetry, tracer, withSpan, type Telemetry, type TelemetryOptions } from './telemetry';
export type { Store, LeaseInfo, EpochValue } from './store/port';
export { RedisStore, type RedisStoreOptions } from './store/redis';
export { EmbeddedStore, embeddedStoreFiles, type EmbeddedStoreOptions } from './store/embedded';
export { openStore, type OpenStoreOptions } from './store/open';
export { checkpointKey } from './store/checkpoint';
