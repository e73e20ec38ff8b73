import type * as grpc from '@grpc/grpc-js';

const MALFORMED = Symbol.for('understudy.malformed');

/**
 * Wrap a service definition so a request that fails to decode reaches the handler as a
 * marker instead of being answered INTERNAL by grpc-js; `unaryHandler` turns the marker into
 * INVALID_ARGUMENT ("malformed request") — bad input must get a specific status (R-NF-4).
 */
export function withSafeDeserialize<T extends grpc.ServiceDefinition>(def: T): T {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(def)) {
    const orig = m.requestDeserialize;
    out[name] = {
      ...m,
      requestDeserialize: (buf: Buffer) => {
        try {
          return orig(buf);
        } catch (e) {
          return { [MALFORMED]: e instanceof Error ? e.message : String(e) };
        }
      },
    };
  }
  return out as T;
}

/** The decode error of a request wrapped by {@link withSafeDeserialize}, if it failed to decode. */
export function malformedReason(req: unknown): string | undefined {
  if (req && typeof req === 'object' && MALFORMED in req) return String((req as Record<symbol, unknown>)[MALFORMED]);
  return undefined;
}
