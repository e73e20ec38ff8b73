/** Test helper: the member list the controller sends in SetRoles, built from copy handles. */
import { Role, type Member } from '@understudy/proto';

/** What a member entry needs of a copy. */
export interface MemberOf {
  readonly copyId: string;
  readonly address: string;
  readonly incarnation: number;
}

/** `active` first as ACTIVE, then `standbys` as STANDBY (in order), none catching up. */
export function membersOf(active: MemberOf, standbys: readonly MemberOf[]): Member[] {
  const m = (c: MemberOf, role: Role): Member => ({ copyId: c.copyId, address: c.address, role, incarnation: c.incarnation, catchingUp: false });
  return [m(active, Role.ROLE_ACTIVE), ...standbys.map((s) => m(s, Role.ROLE_STANDBY))];
}
