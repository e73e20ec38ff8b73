/**
 * What an application writes: one deterministic state machine per resource set (RS).
 * ADSM runs `handle` on the ACTIVE copy only and `apply` on the active and every standby,
 * so `apply` must be a pure function of (state, update): the same updates in the same order
 * give the same state on every copy.
 */

/**
 * A message a handler sends to another application (R-DFM-1). It must follow the data-flow map:
 * the topology needs an edge from the sender's app to `app`, else the whole incoming message is
 * refused (FAILED_PRECONDITION, "unknown edge"). It is delivered at least once and applied once:
 * it joins the RS's replicated outbox with the handler's updates and is resent, with the same
 * id, until the destination's active copy acknowledged it, across failovers on both sides.
 */
export interface OutgoingMessage {
  /** Destination application. */
  readonly app: string;
  /**
   * Key the destination partitions by. @default the payload's field named by the edge's
   * `keyField` (a non-empty string or a number)
   */
  readonly key?: string;
  /** JSON-serialisable; what the destination's `handle` receives as its message. */
  readonly payload: unknown;
}

/** What `handle` decides for one message. */
export interface HandleResult<U, R> {
  /** State updates; replicated to standbys, then applied everywhere, in order. */
  readonly updates?: readonly U[];
  /** Returned to the sender once the updates are replicated (the acknowledgement). */
  readonly reply?: R;
  /**
   * Messages for other applications, sent once the updates are committed (see
   * {@link OutgoingMessage}). While the RS's outbox is full the RS takes no new input.
   */
  readonly send?: readonly OutgoingMessage[];
}

/**
 * Context passed to `handle`; never includes wall-clock time (keep handlers deterministic).
 * @typeParam S - RS state (the type of the shared data too: it is the master RS's state).
 */
export interface HandleContext<S = unknown> {
  readonly app: string;
  readonly rs: number;
  readonly epoch: number;
  readonly messageId: string;
  readonly key: string;
  /**
   * Shared data (R-ADSM): the committed state of the application's master RS
   * (`sharedMasterRs` in the topology), the same on every copy up to how far it got, e.g. a
   * rate table. READ-ONLY: it is the copy's live view, never mutate it or keep parts of it in
   * your own state (copy what you need). Updates reach it in sequence order: the master RS's
   * active acknowledges an update once the master RS's standbys applied it, and every other
   * copy applies it shortly after (one stream hop), so a message handled on another copy
   * right after that acknowledgement may still see the previous version (see `sharedSeq`).
   * A copy runs no message of another RS before it holds a first snapshot of it.
   * `undefined` when the application declares no master RS.
   */
  readonly shared: Readonly<S> | undefined;
  /**
   * Sequence number of the master RS that `shared` reflects (every committed update up to it is
   * applied, none after); 0 when the application declares no master RS.
   */
  readonly sharedSeq: number;
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
  handle(state: S, message: M, ctx: HandleContext<S>): HandleResult<U, R>;
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
