/**
 * Where checkpoints live in the store (R-CKP-1). One epoch-fenced key per resource set, written
 * with `putAtEpoch` at the RS's epoch and taken over with `fenceAndGet` by a new active (R-HM-5).
 * Shared by every writer — the controller (checkpoints sent over gRPC, stored in its store) and
 * copies that write to a shared Redis directly — so both name the same key.
 */

/** Store key of the checkpoint of `app`'s resource set `rs`. */
export function checkpointKey(app: string, rs: number): string {
  return `checkpoint/${app}/${rs}`;
}
