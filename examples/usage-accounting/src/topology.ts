/**
 * The usage-accounting topology: four DISTRIBUTED_FAULT_TOLERANT applications (an active and a
 * standby copy per RS) and the data-flow map collector → aggregator → enhancer → output.
 */
import { Mode, Partitioning, type AppSpec, type Edge, type Topology } from '@understudy/proto';
import { ENHANCER_RANGE_STARTS, MASTER_RS } from './enhancer';

/** The applications in pipeline order. */
export const STAGES = ['collector', 'aggregator', 'enhancer', 'output'] as const;
/** One of {@link STAGES}. */
export type Stage = (typeof STAGES)[number];

/** The data-flow map: who sends to whom, and which payload field is the destination's key. */
export const EDGES: readonly Edge[] = [
  { from: 'collector', to: 'aggregator', keyField: 'subscriber' },
  { from: 'aggregator', to: 'enhancer', keyField: 'subscriber' },
  { from: 'enhancer', to: 'output', keyField: 'recordId' },
];

/** Options of {@link usageTopology}. */
export interface UsageTopologyOptions {
  /** RS of the collector, aggregator and output (the enhancer has 4: the rate table and 3 ranges). @default 4 */
  readonly rsCount?: number;
  /** Copies each application needs before its first placement. @default 3 */
  readonly minCopies?: number;
  /** Heartbeats missed in a row before a copy counts as hung (a crash is seen at once). @default 15 */
  readonly missedHeartbeats?: number;
}

/** The topology to apply (ApplyTopology). */
export function usageTopology(o: UsageTopologyOptions = {}): Topology {
  const app = (name: Stage, extra: Partial<AppSpec> = {}): AppSpec => ({
    name,
    mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT,
    rsCount: o.rsCount ?? 4,
    standbys: 1,
    minCopies: o.minCopies ?? 3,
    partitioning: Partitioning.PARTITIONING_HASH,
    rangeStarts: [],
    // Generous hang detection: the demo shares a small machine; kill -9 is detected at once anyway.
    detection: { heartbeatIntervalMs: 200, missedHeartbeats: o.missedHeartbeats ?? 15, maxEventLoopLagMs: 0, maxCpuPercent: 0, maxRssBytes: 0, maxQueueDepth: 0, breachSamples: 0, probeIntervalMs: 0, probeTimeoutMs: 0 },
    ...extra,
  });
  return {
    apps: [
      app('collector'),
      app('aggregator'),
      app('enhancer', { rsCount: ENHANCER_RANGE_STARTS.length + 1, partitioning: Partitioning.PARTITIONING_RANGE, rangeStarts: [...ENHANCER_RANGE_STARTS], sharedMasterRs: MASTER_RS }),
      app('output'),
    ],
    edges: [...EDGES],
  };
}
