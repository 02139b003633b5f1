"""Incremental serialization of mirrors: snapshots and cumulative deltas (``MirrorRecord``).

A snapshot holds every variable; a delta holds only the variables changed, and the names removed,
since the last snapshot, so restoring needs one snapshot and one delta per run and a compacted
topic keyed ``(workflow, run, kind)`` keeps exactly those. A new snapshot is taken once the delta
would cover more than ``snapshot_ratio`` of the variables. Records are canonical (variables sorted
by name, held events by sequence), so the same state always serializes to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from schemas.records import HistoryEvent
from streams.mirror.run import Gap, MirrorLimits, RunMirror

SNAPSHOT = "SNAPSHOT"
DELTA = "DELTA"


def record_key(workflow_id: str, run_id: str, kind: str) -> bytes:
    """The compaction key of a run's snapshot or delta."""
    return f"{workflow_id}\x1f{run_id}\x1f{kind}".encode()


def _common(mirror: RunMirror, kind: str, base: int) -> dict[str, Any]:
    return {
        "workflow_id": mirror.workflow_id, "run_id": mirror.run_id,
        "workflow_type": mirror.workflow_type, "kind": kind, "base_sequence": base,
        "sequence": mirror.sequence, "removed": [],
        "pending": [mirror.pending[s].to_avro() for s in sorted(mirror.pending)],
        "duplicates": mirror.duplicates,
        "gaps": [{"first": g.first, "last": g.last} for g in mirror.gaps],
    }


def snapshot_record(mirror: RunMirror) -> dict[str, Any]:
    """The full state, as a ``MirrorRecord``."""
    record = _common(mirror, SNAPSHOT, mirror.sequence)
    record["variables"] = {k: mirror.variables[k] for k in sorted(mirror.variables)}
    return record


def delta_record(mirror: RunMirror) -> dict[str, Any]:
    """What changed since the last snapshot, as a ``MirrorRecord``."""
    record = _common(mirror, DELTA, mirror.snapshot_sequence)
    changed = sorted(mirror.changed_since_snapshot)
    record["variables"] = {k: mirror.variables[k] for k in changed if k in mirror.variables}
    record["removed"] = [k for k in changed if k not in mirror.variables]
    return record


def next_record(mirror: RunMirror, snapshot_ratio: float = 0.25) -> dict[str, Any]:
    """The record to publish for ``mirror`` now: a delta, or a snapshot when none was taken yet,
    the delta has grown past ``snapshot_ratio`` of the variables, or the events since the last
    snapshot (promotion's tail) are due one (``RunMirror.snapshot_due``). Marks the snapshot."""
    if (mirror.snapshot_sequence == 0 or mirror.snapshot_due() or
            len(mirror.changed_since_snapshot) > snapshot_ratio * max(1, len(mirror.variables))):
        record = snapshot_record(mirror)
        mirror.mark_snapshot()
        return record
    return delta_record(mirror)


def restore(snapshot: Mapping[str, Any], delta: Mapping[str, Any] | None = None,
            limits: MirrorLimits | None = None) -> RunMirror:
    """The mirror a snapshot and (optionally) the latest delta on it describe.

    A delta of another base is ignored. The restored mirror can take events, be compared at its
    current sequence and publish further deltas; its undo log and promotion tail start empty
    (the tail incomplete when the delta moved past the snapshot: its next record is a snapshot).
    """
    mirror = RunMirror(snapshot["workflow_id"], snapshot["run_id"], snapshot["workflow_type"],
                       limits or MirrorLimits())
    mirror.variables = dict(snapshot["variables"])
    mirror.sequence = mirror.snapshot_sequence = snapshot["sequence"]
    latest = snapshot
    if delta is not None and delta["base_sequence"] == snapshot["sequence"]:
        mirror.variables.update(delta["variables"])
        for name in delta["removed"]:
            mirror.variables.pop(name, None)
        mirror.changed_since_snapshot = set(delta["variables"]) | set(delta["removed"])
        mirror.sequence = delta["sequence"]
        mirror.tail_complete = mirror.sequence == mirror.snapshot_sequence
        latest = delta
    mirror.pending = {e["sequence"]: HistoryEvent.from_avro(e) for e in latest["pending"]}
    mirror.duplicates = latest["duplicates"]
    mirror.gaps = [Gap(g["first"], g["last"]) for g in latest["gaps"]]
    return mirror


def restore_all(entries: Iterable[tuple[bytes, Mapping[str, Any] | None]],
                limits: MirrorLimits | None = None) -> dict[tuple[str, str], RunMirror]:
    """Mirrors from a log of ``(key, record)`` in log order: later records win, and a ``None``
    record (a tombstone: the run was evicted) deletes its key's record."""
    latest: dict[bytes, Mapping[str, Any]] = {}
    for key, record in entries:
        if record is None:
            latest.pop(key, None)
        else:
            latest[key] = record
    mirrors: dict[tuple[str, str], RunMirror] = {}
    for record in latest.values():
        if record["kind"] == SNAPSHOT:
            delta = latest.get(record_key(record["workflow_id"], record["run_id"], DELTA))
            mirrors[(record["workflow_id"], record["run_id"])] = restore(record, delta, limits)
    return mirrors
