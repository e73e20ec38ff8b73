import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Metadata, status } from '@grpc/grpc-js';
import {
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  fromServiceError,
} from '@understudy/runtime';
import { ControllerUnreachableError, ExitCode, UsageError, describeError, exitCodeForStatus, grpcStatusOf } from '../src/errors';
import { TopologyFileError } from '../src/topology-file';

describe('exit codes', () => {
  it('maps every gRPC status', () => {
    const expected: Record<string, number> = {
      OK: 0,
      INVALID_ARGUMENT: 2,
      NOT_FOUND: 3,
      FAILED_PRECONDITION: 4,
      UNAVAILABLE: 5,
      DEADLINE_EXCEEDED: 5,
    };
    for (const [name, value] of Object.entries(status)) {
      if (typeof value !== 'number') continue;
      assert.equal(exitCodeForStatus(value), expected[name] ?? 1, `exit code of ${name}`);
    }
    assert.equal(exitCodeForStatus(undefined), ExitCode.FAILURE);
  });

  it('is a fixed interface', () => {
    assert.deepEqual(ExitCode, { OK: 0, FAILURE: 1, USAGE: 2, NOT_FOUND: 3, FAILED_PRECONDITION: 4, UNAVAILABLE: 5 });
  });
});

describe('describeError', () => {
  it('a refusal by the controller: "<op> refused: <message> (CODE)"', () => {
    const d = describeError(new FailedPreconditionError('copy c3 is not a standby of counter/5'), 'switchover');
    assert.deepEqual(d, { code: 'FAILED_PRECONDITION', message: 'switchover refused: copy c3 is not a standby of counter/5 (FAILED_PRECONDITION)', exitCode: 4 });
    assert.deepEqual(describeError(new NotFoundError('copy "zz" is not registered'), 'drain'), {
      code: 'NOT_FOUND',
      message: 'drain refused: copy "zz" is not registered (NOT_FOUND)',
      exitCode: 3,
    });
    assert.equal(describeError(new InvalidArgumentError('apps[0]: rs_count must be >= 1'), 'apply').exitCode, 2);
    assert.equal(describeError(new ResourceExhaustedError('busy'), 'apply').exitCode, 1);
  });

  it('typed errors decoded from a raw grpc ServiceError keep their code', () => {
    const raw = Object.assign(new Error('9 FAILED_PRECONDITION: not activated'), { code: status.FAILED_PRECONDITION, details: 'not activated', metadata: new Metadata() });
    const d = describeError(fromServiceError(raw), 'switchover');
    assert.equal(d.message, 'switchover refused: not activated (FAILED_PRECONDITION)');
    assert.equal(d.exitCode, 4);
    // An undecoded ServiceError works too; the client-side "<n> <NAME>: " prefix is dropped.
    assert.equal(describeError(raw, 'switchover').message, 'switchover refused: not activated (FAILED_PRECONDITION)');
  });

  it('unavailable and deadline: exit 5', () => {
    assert.equal(describeError(new UnavailableError('not the leader'), 'status').exitCode, 5);
    assert.equal(describeError(new DeadlineExceededError('deadline'), 'status').exitCode, 5);
    const u = new ControllerUnreachableError('no controller reachable: tried 127.0.0.1:1 for 5 ms', status.UNAVAILABLE, ['127.0.0.1:1']);
    assert.deepEqual(describeError(u, 'status'), { code: 'UNAVAILABLE', message: 'no controller reachable: tried 127.0.0.1:1 for 5 ms', exitCode: 5 });
  });

  it('usage and file errors: exit 2, INVALID_ARGUMENT, message as is', () => {
    assert.deepEqual(describeError(new UsageError('RS must be a number'), 'switchover'), { code: 'INVALID_ARGUMENT', message: 'RS must be a number', exitCode: 2 });
    const f = new TopologyFileError('t.yaml', ['apps: missing']);
    assert.deepEqual(describeError(f, 'apply'), { code: 'INVALID_ARGUMENT', message: 'bad topology file t.yaml: apps: missing', exitCode: 2 });
  });

  it('anything else: exit 1', () => {
    assert.deepEqual(describeError(new Error('boom'), 'status'), { code: 'UNKNOWN', message: 'status failed: boom', exitCode: 1 });
    const internal = Object.assign(new Error('13 INTERNAL: internal error'), { code: status.INTERNAL, details: 'internal error', metadata: new Metadata() });
    assert.deepEqual(describeError(internal, 'status'), { code: 'INTERNAL', message: 'status failed: internal error (INTERNAL)', exitCode: 1 });
    assert.equal(describeError('a string', 'status').exitCode, 1);
  });

  it('grpcStatusOf ignores non-grpc codes', () => {
    assert.equal(grpcStatusOf(Object.assign(new Error('x'), { code: 'ENOENT' })), undefined);
    assert.equal(grpcStatusOf(null), undefined);
    assert.equal(grpcStatusOf(new NotFoundError('x')), status.NOT_FOUND);
  });
});
