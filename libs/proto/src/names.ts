import { CopyStatus, Mode, Role } from './gen/understudy/v1/common';

/** Role as the decision core spells it. */
export type RoleName = 'ACTIVE' | 'STANDBY' | 'OUT_OF_SERVICE';
/** Mode as the decision core spells it. */
export type ModeName = 'DISTRIBUTED' | 'FAULT_TOLERANT' | 'DISTRIBUTED_FAULT_TOLERANT';
/** Copy status as the decision core spells it. */
export type CopyStatusName = 'UP' | 'DRAINED' | 'DISABLED' | 'OUT_OF_SERVICE';

const ROLE_NAMES: Record<number, RoleName | undefined> = {
  [Role.ROLE_ACTIVE]: 'ACTIVE',
  [Role.ROLE_STANDBY]: 'STANDBY',
  [Role.ROLE_OUT_OF_SERVICE]: 'OUT_OF_SERVICE',
};
const MODE_NAMES: Record<number, ModeName | undefined> = {
  [Mode.MODE_DISTRIBUTED]: 'DISTRIBUTED',
  [Mode.MODE_FAULT_TOLERANT]: 'FAULT_TOLERANT',
  [Mode.MODE_DISTRIBUTED_FAULT_TOLERANT]: 'DISTRIBUTED_FAULT_TOLERANT',
};
const STATUS_NAMES: Record<number, CopyStatusName | undefined> = {
  [CopyStatus.COPY_STATUS_UP]: 'UP',
  [CopyStatus.COPY_STATUS_DRAINED]: 'DRAINED',
  [CopyStatus.COPY_STATUS_DISABLED]: 'DISABLED',
  [CopyStatus.COPY_STATUS_OUT_OF_SERVICE]: 'OUT_OF_SERVICE',
};

function invert<T extends string>(m: Record<number, T | undefined>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) if (v) out[v] = Number(k);
  return out;
}
const ROLE_VALUES = invert(ROLE_NAMES);
const MODE_VALUES = invert(MODE_NAMES);
const STATUS_VALUES = invert(STATUS_NAMES);

/** Wire role → name; undefined for UNSPECIFIED or unknown values (callers reject those). */
export function roleName(r: Role): RoleName | undefined {
  return ROLE_NAMES[r];
}
/** Name → wire role. */
export function roleFromName(n: RoleName): Role {
  return ROLE_VALUES[n] as Role;
}
/** Wire mode → name; undefined for UNSPECIFIED or unknown values. Accepts `MODE_X` or `X` strings too. */
export function modeName(m: Mode | string): ModeName | undefined {
  if (typeof m === 'string') {
    const s = m.toUpperCase().replace(/^MODE_/, '');
    return s in MODE_VALUES ? (s as ModeName) : undefined;
  }
  return MODE_NAMES[m];
}
/** Name → wire mode. */
export function modeFromName(n: ModeName): Mode {
  return MODE_VALUES[n] as Mode;
}
/** Wire copy status → name. */
export function copyStatusName(s: CopyStatus): CopyStatusName | undefined {
  return STATUS_NAMES[s];
}
/** Name → wire copy status. */
export function copyStatusFromName(n: CopyStatusName): CopyStatus {
  return STATUS_VALUES[n] as CopyStatus;
}
