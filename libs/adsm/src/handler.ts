/**
 * What an application writes: one deterministic state machine per resource set (RS).
 * ADSM runs `handle` on the ACTIVE copy only and `apply` on the active and every standby,
 * so `apply` must be a pure function of (state, update): the same updates in the same order
 * give the same state on every copy.
 */

/** A message a handler sends to another application (follows the data-flow map; R-DFM-1). */
export interface OutgoingMessage {
  /** Destination application. */
  readonly app: string;
  /** Key the destination partitions by. */
  readonly key: string;
  readonly payload: unknown;
}

/** What `handle` decides for one message. */
export interface HandleResult<U, R> {
  /** State updates; replicated to standbys, then applied everywhere, in order. */
  readonly updates?: readonly U[];
  /** Returned to the sender once the updates are replicated (the acknowledgement). */
  readonly reply?: R;
  /** Messages for other applications (routed once the router lands; see issue 4). */
  readonly send?: readonly OutgoingMessage[];
}

/** Context passed to `handle`; never includes wall-clock time (keep handlers deterministic). */
export interface HandleContext {
  readonly app: string;
  readonly rs: number;
  readonly epoch: number;
  readonly messageId: string;
  readonly key: string;
}

/** Role-change notification for optional hooks. */
export interface RoleChange {
  readonly rs: number;
  readonly role: 'ACTIVE' | 'STANDBY' | 'OUT_OF_SERVICE';
  readonly epoch: number;
}

/**
 * The per-RS state machine an application supplies.
 * @typeParam S - RS state. @typeParam M - incoming message. @typeParam U - update.
 * @typeParam R - reply. @typeParam Q - query. @typeParam QR - query result.
 */
export interface RsHandler<S, M, U, R = unknown, Q = unknown, QR = unknown> {
  /** Initial state of an RS. */
  init(rs: number): S;
  /** Decide updates and a reply for one message (ACTIVE only). Must not mutate `state`. */
  handle(state: S, message: M, ctx: HandleContext): HandleResult<U, R>;
  /** Apply one update; may mutate `state` in place and return it. */
  apply(state: S, update: U): S;
  /** Read-only query on the ACTIVE copy. */
  query?(state: S, query: Q): QR;
  /** JSON-serialisable snapshot for state transfer. @default the state itself */
  snapshot?(state: S): unknown;
  /** Inverse of `snapshot`. @default the snapshot itself */
  restore?(snapshot: unknown): S;
  /** Called after this copy's role for an RS changed. */
  onRoleChange?(change: RoleChange): void;
}

/** An application as ADSM runs it. */
export interface AppDefinition<S, M, U, R = unknown, Q = unknown, QR = unknown> {
  /** Application name as declared in the topology. */
  readonly name: string;
  readonly handler: RsHandler<S, M, U, R, Q, QR>;
}

/** Convenience for type inference: `defineApp({ name, handler: { … } })`. */
export function defineApp<S, M, U, R = unknown, Q = unknown, QR = unknown>(
  def: AppDefinition<S, M, U, R, Q, QR>,
): AppDefinition<S, M, U, R, Q, QR> {
  return def;
}
