/**
 * protobuf ⇄ decision-core translation for the controller. Enum values the wire allows but
 * the core does not (UNSPECIFIED, unknown numbers) are rejected here with INVALID_ARGUMENT.
 */
import {
  CopyStatus as PbCopyStatus,
  Partitioning,
  copyStatusFromName,
  modeFromName,
  modeName,
  roleFromName,
  type AppSpec as PbAppSpec,
  type CopyState,
  type Edge as PbEdge,
  type Member as PbMember,
  type Route,
  type RsAssignment as PbRsAssignment,
  type Topology as PbTopology,
} from '@understudy/proto';
import type { AppSpec, ClusterState, MemberView, PartitioningName, Rejection, RouteChange, RsAssignment, Topology } from '@understudy/core';
import { compileDetectionPolicy } from '@understudy/core';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  type UnderstudyError,
} from '@understudy/runtime';

/** Wire partitioning → core name (UNSPECIFIED is HASH); unknown numbers are absent. */
const PARTITIONING_NAMES: Partial<Record<number, PartitioningName>> = {
  [Partitioning.PARTITIONING_UNSPECIFIED]: 'HASH',
  [Partitioning.PARTITIONING_HASH]: 'HASH',
  [Partitioning.PARTITIONING_RANGE]: 'RANGE',
};

/** Wire topology → core topology (structure only; the core validates the content). */
export function topologyFromPb(t: PbTopology | undefined): Topology {
  if (!t) throw new InvalidArgumentError('topology is required');
  const apps: AppSpec[] = t.apps.map((a, i) => {
    const mode = modeName(a.mode);
    if (!mode) {
      throw new InvalidArgumentError(`apps[${i}] (${a.name || 'unnamed'}): mode is required: DISTRIBUTED, FAULT_TOLERANT or DISTRIBUTED_FAULT_TOLERANT`);
    }
    const partitioning = PARTITIONING_NAMES[a.partitioning];
    if (partitioning === undefined) {
      throw new InvalidArgumentError(`apps[${i}] (${a.name}): unknown partitioning ${a.partitioning}; expected PARTITIONING_HASH or PARTITIONING_RANGE`);
    }
    let spec: AppSpec = { name: a.name, mode, rsCount: a.rsCount, standbys: a.standbys, minCopies: a.minCopies === 0 ? 1 : a.minCopies };
    // HASH stays implicit in the core (absent = HASH); range starts are passed on whatever the
    // partitioning so that the core rejects starts on a HASH app instead of dropping them.
    if (partitioning === 'RANGE') spec = { ...spec, partitioning };
    if (a.rangeStarts.length > 0) spec = { ...spec, rangeStarts: [...a.rangeStarts] };
    if (a.sharedMasterRs !== undefined) spec = { ...spec, sharedMasterRs: a.sharedMasterRs };
    return a.detection === undefined ? spec : { ...spec, detection: { ...a.detection } };
  });
  const edges = t.edges.map((e) => ({ from: e.from, to: e.to, keyField: e.keyField }));
  return { apps, edges };
}

/** Core app spec → wire. */
export function appSpecToPb(s: AppSpec): PbAppSpec {
  return {
    name: s.name,
    mode: modeFromName(s.mode),
    rsCount: s.rsCount,
    standbys: s.standbys,
    minCopies: s.minCopies,
    partitioning: s.partitioning === 'RANGE' ? Partitioning.PARTITIONING_RANGE : Partitioning.PARTITIONING_HASH,
    detection: { ...compileDetectionPolicy(s.detection) },
    rangeStarts: [...(s.rangeStarts ?? [])],
    ...(s.sharedMasterRs === undefined ? {} : { sharedMasterRs: s.sharedMasterRs }),
  };
}

/** Core edge → wire. */
export function edgeToPb(e: { from: string; to: string; keyField: string }): PbEdge {
  return { from: e.from, to: e.to, keyField: e.keyField };
}

function memberToPb(m: MemberView): PbMember {
  return { copyId: m.copyId, address: m.address, role: roleFromName(m.role), incarnation: m.incarnation, catchingUp: false };
}

/** Core assignment → wire, with addresses. */
export function assignmentToPb(state: ClusterState, a: RsAssignment): PbRsAssignment {
  return {
    app: a.app,
    rs: a.rs,
    epoch: a.epoch,
    version: a.version,
    members: a.members.map((m) => ({
      copyId: m.copyId,
      address: state.copies[m.copyId]?.address ?? '',
      role: roleFromName(m.role),
      incarnation: state.copies[m.copyId]?.incarnation ?? 0,
      catchingUp: state.apps[a.app]?.syncing?.[a.rs]?.[m.copyId] !== undefined,
    })),
  };
}

/** Core route change → wire route. */
export function routeToPb(r: RouteChange): Route {
  return {
    app: r.app,
    rs: r.rs,
    epoch: r.epoch,
    activeCopyId: r.active?.copyId ?? '',
    activeAddress: r.active?.address ?? '',
    previousCopyId: r.previous?.copyId ?? '',
    previousAddress: r.previous?.address ?? '',
    standbys: r.standbys.map(memberToPb),
  };
}

/** Role entries of a SetRoles command → wire. */
export function roleEntriesToPb(entries: readonly import('@understudy/core').RoleEntry[]): import('@understudy/proto').RoleEntry[] {
  return entries.map((e) => ({
    app: e.app,
    rs: e.rs,
    role: roleFromName(e.role),
    epoch: e.epoch,
    version: e.version,
    members: e.members.map(memberToPb),
  }));
}

/** One copy's status line. */
export function copyToPb(state: ClusterState, copyId: string, loads: { active: number; standby: number } | undefined, lastHeardMs: number | undefined): CopyState {
  const c = state.copies[copyId]!;
  return {
    copyId: c.copyId,
    app: c.app,
    host: c.host,
    address: c.address,
    incarnation: c.incarnation,
    status: c.status ? copyStatusFromName(c.status) : PbCopyStatus.COPY_STATUS_UNSPECIFIED,
    activeCount: loads?.active ?? 0,
    standbyCount: loads?.standby ?? 0,
    lastHeardUnixMs: lastHeardMs ?? c.lastHeardAtMs,
  };
}

/** The one place a core rejection becomes a typed error (and so a gRPC status). */
export function rejectionToError(r: Rejection): UnderstudyError {
  switch (r.code) {
    case 'INVALID_ARGUMENT':
      return new InvalidArgumentError(r.message);
    case 'NOT_FOUND':
      return new NotFoundError(r.message);
    case 'FAILED_PRECONDITION':
      return new FailedPreconditionError(r.message);
    case 'UNAVAILABLE':
      return new UnavailableError(r.message);
  }
}
