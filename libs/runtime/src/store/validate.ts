/**
 * Argument checks shared by both store adapters, so both reject the same calls with the
 * same InvalidArgumentError messages (part of "same semantics").
 */
import { InvalidArgumentError } from '../errors';

/** Keys and lease names: non-empty strings. */
export function checkName(what: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidArgumentError(`${what} must be a non-empty string`);
  return value;
}

/** Holder ids: non-empty strings. */
export function checkHolderId(value: unknown): string {
  return checkName('holderId', value);
}

/** Holder data: any string (may be empty). */
export function checkHolderData(value: unknown): string {
  if (typeof value !== 'string') throw new InvalidArgumentError('holderData must be a string');
  return value;
}

/** Lease TTLs: positive integer milliseconds. */
export function checkTtlMs(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidArgumentError(`ttlMs must be a positive integer number of milliseconds, got ${String(value)}`);
  }
  return value;
}

/** Lease tokens: positive safe integers (the first token is 1). */
export function checkToken(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidArgumentError(`token must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/** Epochs: non-negative safe integers. */
export function checkEpoch(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`epoch must be a non-negative integer, got ${String(value)}`);
  }
  return value;
}

/** Values: bytes. */
export function checkValue(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new InvalidArgumentError('value must be a Uint8Array');
  return value;
}

/** A view of `bytes` as a Buffer without copying. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Messages shared by both adapters for the same refusals. */
export const storeMessages = {
  fenced: (key: string, lease: string, token: number) => `write to '${key}' refused: lease '${lease}' is not held with token ${token}`,
  staleEpoch: (key: string, epoch: number, stored: number) => `write to '${key}' refused: epoch ${epoch} is below the stored epoch ${stored}`,
  wrongType: (key: string) => `key '${key}' holds another kind of value (plain vs epoch-fenced)`,
  notInteger: (key: string) => `key '${key}' does not hold an integer`,
} as const;
