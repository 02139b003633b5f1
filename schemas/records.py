"""Typed records for the Avro schemas, and the conversions to and from what fastavro gives.

The pipeline's logic works on these dataclasses, never on raw dicts, so a field's name and type
are checked in one place. Each record mirrors its ``.avsc`` file field for field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from sys import intern
from typing import Any, TypeVar

from schemas.codec import CodecError, Decoded
from schemas.ids import stable_int

T = TypeVar("T")

Value = None | bool | int | float | str
"""A state variable's value: what the Avro ``values`` and ``variables`` unions allow."""


class EventKind(StrEnum):
    """What a history event records (the ``EventKind`` Avro enum)."""

    WORKFLOW_STARTED = "WORKFLOW_STARTED"
    WORKFLOW_COMPLETED = "WORKFLOW_COMPLETED"
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    ACTION_SCHEDULED = "ACTION_SCHEDULED"
    ACTION_STARTED = "ACTION_STARTED"
    ACTION_COMPLETED = "ACTION_COMPLETED"
    ACTION_FAILED = "ACTION_FAILED"
    STATE_UPDATED = "STATE_UPDATED"


RESOURCE_CLASSES = ("cpu_cores", "memory_bytes", "network_bytes", "cost")
"""The resource classes shadowflow forecasts and reserves: the fields of ``Resources``."""

SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
"""The ``Severity`` symbols of ``Anomaly.avsc``, least severe first."""


def most_severe(*severities: str) -> str:
    """The most severe of ``severities``."""
    return max(severities, key=SEVERITIES.index)


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float (booleans are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Resources:
    """Amounts per resource class; ``None`` where not stated."""

    cpu_cores: float | None = None
    memory_bytes: int | None = None
    network_bytes: int | None = None
    cost: float | None = None

    @classmethod
    def from_avro(cls, record: Mapping[str, Any] | None) -> Resources | None:
        """The record fastavro decoded, or ``None`` for an Avro null."""
        if record is None:
            return None
        return cls(record["cpu_cores"], record["memory_bytes"], record["network_bytes"],
                   record["cost"])

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro encodes."""
        return {"cpu_cores": self.cpu_cores, "memory_bytes": self.memory_bytes,
                "network_bytes": self.network_bytes, "cost": self.cost}


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One entry of a workflow run's history (``HistoryEvent.avsc``)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    sequence: int
    kind: EventKind
    timestamp_ms: int
    action_id: str | None = None
    action_type: str | None = None
    attempt: int = 1
    attributes: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    declared: Resources | None = None
    values: Mapping[str, Value] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_avro(cls, r: Mapping[str, Any]) -> HistoryEvent:
        """The record fastavro decoded. Its names are interned: every event of a run repeats
        them, and the events a mirror keeps (its promotion tail) then share one copy each."""
        action_id, action_type = r["action_id"], r["action_type"]
        return cls(
            intern(r["workflow_id"]), intern(r["run_id"]), intern(r["workflow_type"]),
            r["sequence"], EventKind(r["kind"]), r["timestamp_ms"],
            None if action_id is None else intern(action_id),
            None if action_type is None else intern(action_type),
            r["attempt"], r["attributes"], r["labels"], Resources.from_avro(r["declared"]),
            r["values"], r["error"],
        )

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro encodes."""
        return {
            "workflow_id": self.workflow_id, "run_id": self.run_id,
            "workflow_type": self.workflow_type, "sequence": self.sequence,
            "kind": self.kind.value, "timestamp_ms": self.timestamp_ms,
            "action_id": self.action_id, "action_type": self.action_type,
            "attempt": self.attempt, "attributes": dict(self.attributes),
            "labels": dict(self.labels),
            "declared": self.declared.to_avro() if self.declared else None,
            "values": dict(self.values), "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be processed, with why and where it came from."""

    payload: bytes
    key: bytes | None
    reason: str
    topic: str
    partition: int
    offset: int
    failed_ms: int

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro encodes."""
        return {"payload": self.payload, "key": self.key, "reason": self.reason,
                "topic": self.topic, "partition": self.partition, "offset": self.offset,
                "failed_ms": self.failed_ms}

    @classmethod
    def from_avro(cls, r: Mapping[str, Any]) -> DeadLetter:
        """The record fastavro decoded."""
        return cls(r["payload"], r["key"], r["reason"], r["topic"], r["partition"],
                   r["offset"], r["failed_ms"])


def history_events(decoded: Decoded) -> list[HistoryEvent]:
    """The history events a ``wf.history`` message carries: one event, or an envelope of many.

    Raises ``CodecError`` for any other record type, and for an envelope holding an event of
    another workflow (it would land on the wrong partition's owner).
    """
    return _unpack(decoded, "HistoryEvent", "HistoryEnvelope", "events",
                   HistoryEvent.from_avro)


def _unpack(decoded: Decoded, single: str, envelope: str, items: str,
            convert: Callable[[Mapping[str, Any]], T]) -> list[T]:
    # A message holds one record, or an envelope of records of one workflow.
    if decoded.type_name == single:
        return [convert(decoded.record)]
    if decoded.type_name == envelope:
        workflow_id = decoded.record["workflow_id"]
        records = [convert(r) for r in decoded.record[items]]
        strays = {r.workflow_id for r in records} - {workflow_id}  # type: ignore[attr-defined]
        if strays:
            raise CodecError(f"{envelope} of workflow {workflow_id!r} holds {items} of "
                             f"{sorted(strays)}")
        return records
    raise CodecError(f"expected {single} or {envelope}, got {decoded.type_name}")


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """The primary's state vector after applying its history up to ``sequence``."""

    workflow_id: str
    run_id: str
    sequence: int
    timestamp_ms: int
    variables: Mapping[str, Value]

    @classmethod
    def from_avro(cls, r: Mapping[str, Any]) -> StateSnapshot:
        """The record fastavro decoded."""
        return cls(r["workflow_id"], r["run_id"], r["sequence"], r["timestamp_ms"],
                   r["variables"])

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro encodes."""
        return {"workflow_id": self.workflow_id, "run_id": self.run_id,
                "sequence": self.sequence, "timestamp_ms": self.timestamp_ms,
                "variables": dict(self.variables)}


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """Resource samples of one action attempt, as columns of equal length."""

    workflow_id: str
    run_id: str
    action_id: str
    action_type: str | None
    attempt: int
    timestamps_ms: Sequence[int]
    cpu_cores: Sequence[float]
    memory_bytes: Sequence[int]
    network_bytes: Sequence[int]
    cost: Sequence[float]

    @classmethod
    def from_avro(cls, r: Mapping[str, Any]) -> TelemetryBatch:
        """The record fastavro decoded; ``CodecError`` if the columns differ in length."""
        batch = cls(r["workflow_id"], r["run_id"], r["action_id"], r["action_type"],
                    r["attempt"], r["timestamps_ms"], r["cpu_cores"], r["memory_bytes"],
                    r["network_bytes"], r["cost"])
        lengths = {len(batch.timestamps_ms), len(batch.cpu_cores), len(batch.memory_bytes),
                   len(batch.network_bytes), len(batch.cost)}
        if len(lengths) != 1:
            raise CodecError(f"TelemetryBatch of {batch.action_id!r} has columns of different "
                             f"lengths {sorted(lengths)}")
        return batch

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro encodes."""
        return {"workflow_id": self.workflow_id, "run_id": self.run_id,
                "action_id": self.action_id, "action_type": self.action_type,
                "attempt": self.attempt, "timestamps_ms": list(self.timestamps_ms),
                "cpu_cores": list(self.cpu_cores), "memory_bytes": list(self.memory_bytes),
                "network_bytes": list(self.network_bytes), "cost": list(self.cost)}


def telemetry_batches(decoded: Decoded) -> list[TelemetryBatch]:
    """The batches a ``wf.telemetry`` message carries: one, or an envelope of many."""
    return _unpack(decoded, "TelemetryBatch", "TelemetryEnvelope", "batches",
                   TelemetryBatch.from_avro)


def anomaly_id(kind: str, workflow_id: str, run_id: str, sequence: int,
               action_id: str | None = None) -> str:
    """Deterministic: the same anomaly found again after a replay has the same id."""
    identity: tuple[object, ...] = (kind, workflow_id, run_id, sequence)
    if action_id is not None:
        identity += (action_id,)
    return f"{stable_int(*identity):016x}"


def anomaly_record(*, kind: str, severity: str, workflow_id: str, run_id: str, sequence: int,
                   score: float, message: str, detected_ms: int, action_id: str | None = None,
                   variables: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The ``Anomaly`` record (``Anomaly.avsc``)."""
    return {"anomaly_id": anomaly_id(kind, workflow_id, run_id, sequence, action_id),
            "workflow_id": workflow_id, "run_id": run_id, "sequence": sequence, "kind": kind,
            "severity": severity, "score": score, "detected_ms": detected_ms,
            "message": message, "action_id": action_id, "variables": list(variables)}
