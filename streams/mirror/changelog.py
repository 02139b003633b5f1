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

MAX_RECORD_BYTES = 512 * 1024
"""Largest a record is meant to be (by a cautious estimate), half the producer's default limit
of 1 MiB: a snapshot that would be larger is split into parts (``split_snapshot``)."""


def record_key(workflow_id: str, run_id: str, kind: str) -> bytes:
    """The compaction key of a run's snapshot or delta."""
    return f"{workflow_id}\x1f{run_id}\x1f{kind}".encode()


def part_key(workflow_id: str, run_id: str, sequence: int, index: int, count: int) -> bytes:
    """The compaction key of part ``index`` (from 1) of ``count`` of a run's snapshot at
    ``sequence``: distinct per snapshot, so a new snapshot never overwrites the parts the
    snapshot before it still needs."""
    suffix = f"\x1f{sequence}\x1f{index}\x1f{count}"
    return record_key(workflow_id, run_id, SNAPSHOT) + suffix.encode()


def _part_of(key: bytes, record: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(sequence, index, count) if ``key`` names a part of a snapshot of ``record``'s run."""
    prefix = record_key(record["workflow_id"], record["run_id"], SNAPSHOT) + b"\x1f"
    if not key.startswith(prefix):
        return None
    sequence, index, count = key[len(prefix):].split(b"\x1f")
    return int(sequence), int(index), int(count)


def _size(value: object) -> int:
    """A generous estimate of a value's Avro size, in bytes."""
    if isinstance(value, str):
        return 10 + (len(value) if value.isascii() else len(value.encode()))
    return 11


def split_snapshot(record: Mapping[str, Any], max_bytes: int = MAX_RECORD_BYTES,
                   ) -> list[tuple[bytes, dict[str, Any]]]:
    """A snapshot record as (key, record) pairs of at most about ``max_bytes`` each, in the order
    to send them: the extra parts first (variables only, keyed by ``part_key``), then the head
    (the first variables, held events, gaps; keyed as an unsplit snapshot), so a head on the
    topic finds its parts before it. One pair when the snapshot fits."""
    budget = max_bytes - 1_000 - sum(_size(e) + 200 for e in record["pending"])
    parts: list[dict[str, Any]] = [{}]
    used = 0
    for name, value in record["variables"].items():
        size = _size(name) + _size(value)
        if used + size > budget and parts[-1]:
            parts.append({})
            used = 0
            budget = max_bytes - 1_000
        parts[-1][name] = value
        used += size
    wf, run, seq = record["workflow_id"], record["run_id"], record["sequence"]
    head = dict(record, variables=parts[0])
    extra = [(part_key(wf, run, seq, i, len(parts)),
              dict(record, variables=variables, pending=[], gaps=[], removed=[]))
             for i, variables in enumerate(parts[1:], 1)]
    return [*extra, (record_key(wf, run, SNAPSHOT), head)]


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


def next_records(mirror: RunMirror, snapshot_ratio: float = 0.25,
                 max_bytes: int = MAX_RECORD_BYTES) -> list[tuple[bytes, dict[str, Any] | None]]:
    """What to send for ``mirror`` now, as (key, record) pairs in order: ``next_record``'s
    record, a snapshot split under ``max_bytes``, then tombstones (``None``) for the parts of
    the snapshot it supersedes."""
    record = next_record(mirror, snapshot_ratio)
    if record["kind"] == DELTA:
        return [(record_key(mirror.workflow_id, mirror.run_id, DELTA), record)]
    pairs: list[tuple[bytes, dict[str, Any] | None]] = list(split_snapshot(record, max_bytes))
    stale, mirror.snapshot_parts = mirror.snapshot_parts, [key for key, _ in pairs[:-1]]
    return pairs + [(key, None) for key in stale if key not in mirror.snapshot_parts]


def changelog_keys(mirror: RunMirror) -> list[bytes]:
    """Every key a run's records are under: tombstoned when the run is evicted."""
    return [record_key(mirror.workflow_id, mirror.run_id, SNAPSHOT),
            record_key(mirror.workflow_id, mirror.run_id, DELTA), *mirror.snapshot_parts]


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
    record (a tombstone: the run was evicted) deletes its key's record. A split snapshot is
    put together from its head and the parts of the head's sequence; a run missing a part is
    not restored."""
    latest: dict[bytes, Mapping[str, Any]] = {}
    for key, record in entries:
        if record is None:
            latest.pop(key, None)
        else:
            latest[key] = record
    parts: dict[tuple[str, str], dict[bytes, tuple[tuple[int, int, int], Mapping[str, Any]]]]
    parts = {}
    for key, record in latest.items():
        part = _part_of(key, record) if record["kind"] == SNAPSHOT else None
        if part is not None:
            parts.setdefault((record["workflow_id"], record["run_id"]), {})[key] = (part, record)
    mirrors: dict[tuple[str, str], RunMirror] = {}
    for key, record in latest.items():
        run = (record["workflow_id"], record["run_id"])
        if key != record_key(*run, SNAPSHOT):
            continue
        found = parts.get(run, {})
        mine = {index: (count, p) for (seq, index, count), p in found.values()
                if seq == record["sequence"]}
        count = next(iter(mine.values()))[0] if mine else 1
        if set(mine) != set(range(1, count)):
            continue  # a part is missing (they go out before their head): not restorable
        whole = dict(record, variables={**record["variables"],
                                        **{k: v for _, p in mine.values()
                                           for k, v in p["variables"].items()}})
        delta = latest.get(record_key(*run, DELTA))
        mirror = mirrors[run] = restore(whole, delta, limits)
        mirror.snapshot_parts = sorted(found)  # stale ones too: tombstoned at the next snapshot
    return mirrors
