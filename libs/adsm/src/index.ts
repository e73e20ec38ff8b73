/** ADSM: the library an application embeds to run under Understudy. */
export { defineApp, type AppDefinition, type RsHandler, type HandleResult, type HandleContext, type OutgoingMessage, type RoleChange } from './handler';
export { startCopy, type CopyOptions, type CopyHandle } from './copy';
export {
  storeCheckpoints,
  controllerCheckpoints,
  encodeCheckpoint,
  decodeCheckpoint,
  type CheckpointStore,
  type RsCheckpoint,
} from './checkpoint';
export { RoutingClient, type RoutingClientOptions, type RouteInfo, type Delivered } from './client';
export {
  Forwarder,
  DeliverLink,
  type ForwarderOptions,
  type ForwarderStats,
  type ForwardRequest,
  type ForwardCallback,
  type Forwarded,
  type UnreachableCopy,
  type DeliverLinkHandler,
  type DeliverLinkOptions,
} from './forwarder';
export { ControllerClient, LEADER_ADDRESS_KEY, leaderAddressOf, type ControllerClientOptions } from './controller-client';
export { encodeJson, decodeJson } from './codec';
export { STREAM_BATCH_HEADER, streamBatchMetadata, takesBatches } from './stream-batch';
export { runCopyProcess, copyProcessConfig, FENCED_EXIT_CODE } from './process';
export { FaultManagerLink, faultManagerOrder, type FaultManagerLinkOptions } from './watch';
export { LoadReporter, type LoadReporterOptions } from './load';
export { resolveSends, MAX_SEND_KEY_LENGTH, type DataFlowOptions, type DataFlowStats } from './dataflow';
export { Outbox, outboxMessageId, type OutboxBounds, type OutboxItem } from './outbox';
