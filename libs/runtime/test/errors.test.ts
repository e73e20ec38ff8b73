/**
 * errors.ts: the status mapping in both directions, per class, and what never leaks.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AbortedError,
  DeadlineExceededError,
  ensureError,
  FailedPreconditionError,
  FencedError,
  fromServiceError,
  INTERNAL_ERROR_DETAILS,
  InvalidArgumentError,
  isRetryable,
  LEADER_ADDRESS_METADATA_KEY,
  NotActiveError,
  NotFoundError,
  PermissionDeniedError,
  REASON_METADATA_KEY,
  ResourceExhaustedError,
  StaleEpochError,
  StoreUnavailableError,
  toServiceError,
  UnavailableError,
  UnderstudyError,
} from '../src/errors';

/** What a grpc-js client receives for the status a server sent. */
function overTheWire(e: unknown): ServiceError {
  const { code, details, metadata } = toServiceError(e);
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata });
}

const cases: Array<{ make: () => UnderstudyError; cls: abstract new (...a: never[]) => UnderstudyError; code: status; retryable: boolean }> = [
  { make: () => new InvalidArgumentError('bad rs -1'), cls: InvalidArgumentError, code: status.INVALID_ARGUMENT, retryable: false },
  { make: () => new NotFoundError('no copy x'), cls: NotFoundError, code: status.NOT_FOUND, retryable: false },
  { make: () => new FailedPreconditionError('app has no copies'), cls: FailedPreconditionError, code: status.FAILED_PRECONDITION, retryable: false },
  { make: () => new ResourceExhaustedError('hold buffer full'), cls: ResourceExhaustedError, code: status.RESOURCE_EXHAUSTED, retryable: false },
  { make: () => new PermissionDeniedError('viewer cannot drain'), cls: PermissionDeniedError, code: status.PERMISSION_DENIED, retryable: false },
  { make: () => new FencedError('token 3 is stale'), cls: FencedError, code: status.FAILED_PRECONDITION, retryable: false },
  { make: () => new StaleEpochError('epoch 2 < 5'), cls: StaleEpochError, code: status.FAILED_PRECONDITION, retryable: false },
  { make: () => new NotActiveError('copy a1 is STANDBY for rs 3'), cls: NotActiveError, code: status.FAILED_PRECONDITION, retryable: false },
  { make: () => new UnavailableError('starting'), cls: UnavailableError, code: status.UNAVAILABLE, retryable: true },
  { make: () => new DeadlineExceededError('too slow'), cls: DeadlineExceededError, code: status.DEADLINE_EXCEEDED, retryable: true },
  { make: () => new AbortedError('conflict'), cls: AbortedError, code: status.ABORTED, retryable: true },
  { make: () => new StoreUnavailableError('redis down'), cls: StoreUnavailableError, code: status.UNAVAILABLE, retryable: true },
];

describe('errors: round trip through a gRPC status', () => {
  for (const c of cases) {
    test(`${c.make().name} → ${status[c.code]} → ${c.make().name}`, () => {
      const original = c.make();
      assert.equal(original.code, c.code);
      assert.equal(original.retryable, c.retryable);
      const wire = toServiceError(original);
      assert.equal(wire.code, c.code);
      assert.equal(wire.details, original.message);

      const back = fromServiceError(overTheWire(original));
      assert.ok(back instanceof c.cls, `got ${back.constructor.name}`);
      assert.equal(back.constructor, original.constructor, 'exactly the same class, not just a base');
      assert.equal(back.message, original.message);
      assert.deepEqual((back as UnderstudyError).metadata, original.metadata);
      assert.equal(isRetryable(back), c.retryable);
    });
  }

  test('NOT_ACTIVE: message prefix and reason metadata, and it round-trips', () => {
    const e = new NotActiveError('copy a1 is not ACTIVE for rs 3');
    assert.ok(e.message.startsWith('NOT_ACTIVE:'));
    assert.equal(e.metadata[REASON_METADATA_KEY], 'NOT_ACTIVE');
    assert.ok(e instanceof FailedPreconditionError);
    const wire = toServiceError(e);
    assert.deepEqual(wire.metadata.get(REASON_METADATA_KEY), ['NOT_ACTIVE']);
    const back = fromServiceError(overTheWire(e));
    assert.ok(back instanceof NotActiveError);
    assert.equal(back.message, e.message, 'the prefix is not doubled');
  });

  test('a peer that sent only the NOT_ACTIVE: prefix still maps to NotActiveError', () => {
    const md = new Metadata();
    const back = fromServiceError(Object.assign(new Error('x'), { code: status.FAILED_PRECONDITION, details: 'NOT_ACTIVE: rs 3', metadata: md }));
    assert.ok(back instanceof NotActiveError);
  });

  test('leader address metadata survives on UnavailableError', () => {
    const e = new UnavailableError('not the leader', { [LEADER_ADDRESS_METADATA_KEY]: '10.0.0.7:7100' });
    const back = fromServiceError(overTheWire(e));
    assert.ok(back instanceof UnavailableError && !(back instanceof StoreUnavailableError));
    assert.equal(back.metadata[LEADER_ADDRESS_METADATA_KEY], '10.0.0.7:7100');
    assert.equal(isRetryable(back), true);
  });

  test('only understudy-* metadata is read back', () => {
    const md = new Metadata();
    md.set('understudy-leader-address', 'h:1');
    md.set('content-type', 'application/grpc');
    md.set('x-other', 'y');
    const back = fromServiceError(Object.assign(new Error('x'), { code: status.UNAVAILABLE, details: 'no', metadata: md }));
    assert.deepEqual((back as UnderstudyError).metadata, { 'understudy-leader-address': 'h:1' });
  });
});

describe('errors: what does not leak', () => {
  test('the status is an Error whose stack does not point at the original throw site', () => {
    const original = new NotFoundError('no copy x');
    const wire = toServiceError(original);
    assert.ok(wire instanceof Error);
    assert.equal(wire.message, 'no copy x');
    assert.notEqual(wire.stack, original.stack);
  });

  test('an unknown error becomes INTERNAL with a generic message and no metadata', () => {
    const secret = new Error('ENOENT /var/lib/understudy/secret-path at Object.<anonymous> (/src/x.ts:1:1)');
    const wire = toServiceError(secret);
    assert.equal(wire.code, status.INTERNAL);
    assert.equal(wire.details, INTERNAL_ERROR_DETAILS);
    assert.ok(!wire.details.includes('secret') && !wire.details.includes('/src/'));
    assert.deepEqual(wire.metadata.getMap(), {});
  });

  test('non-Error throwables become INTERNAL too', () => {
    for (const thrown of ['a string', 42, null, undefined, { code: 'weird' }]) {
      assert.equal(toServiceError(thrown).code, status.INTERNAL, `for ${String(thrown)}`);
    }
  });

  test('a raw ServiceError re-thrown by a handler keeps a typed code, not an untyped one', () => {
    const unavailable = Object.assign(new Error('14 UNAVAILABLE: down'), { code: status.UNAVAILABLE, details: 'down', metadata: new Metadata() });
    assert.equal(toServiceError(unavailable).code, status.UNAVAILABLE);
    const internal = Object.assign(new Error('13 INTERNAL: stack...'), { code: status.INTERNAL, details: 'stack...', metadata: new Metadata() });
    assert.deepEqual([toServiceError(internal).code, toServiceError(internal).details], [status.INTERNAL, INTERNAL_ERROR_DETAILS]);
  });
});

describe('errors: helpers', () => {
  test('fromServiceError leaves untyped statuses as the original error', () => {
    const cancelled = Object.assign(new Error('1 CANCELLED: Cancelled on client'), { code: status.CANCELLED, details: 'Cancelled on client', metadata: new Metadata() });
    assert.equal(fromServiceError(cancelled), cancelled);
    assert.equal(isRetryable(cancelled), false);
  });

  test('ensureError wraps non-errors and keeps errors', () => {
    const e = new Error('x');
    assert.equal(ensureError(e), e);
    const wrapped = ensureError('boom');
    assert.ok(wrapped instanceof Error);
    assert.match(wrapped.message, /boom/);
    assert.equal(wrapped.cause, 'boom');
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    assert.ok(ensureError(circular) instanceof Error);
  });

  test('isRetryable: typed errors by class, raw grpc errors by code, others false', () => {
    assert.equal(isRetryable(new StoreUnavailableError('x')), true);
    assert.equal(isRetryable(new FencedError('x')), false);
    assert.equal(isRetryable(Object.assign(new Error('x'), { code: status.DEADLINE_EXCEEDED, details: 'x', metadata: new Metadata() })), true);
    assert.equal(isRetryable(new Error('x')), false);
    assert.equal(isRetryable('x'), false);
  });

  test('error metadata keys are checked where the error is built', () => {
    assert.throws(() => new UnavailableError('x', { 'leader-address': 'h:1' }), /must be lower-case, start with 'understudy-'/);
    assert.throws(() => new UnavailableError('x', { 'understudy-Leader': 'h:1' }), TypeError);
  });

  test('errors carry their name and an optional cause', () => {
    const cause = new Error('socket closed');
    const e = new StoreUnavailableError('redis down', { cause });
    assert.equal(e.name, 'StoreUnavailableError');
    assert.equal(e.cause, cause);
    assert.ok(e instanceof UnavailableError && e instanceof UnderstudyError && e instanceof Error);
  });
});
