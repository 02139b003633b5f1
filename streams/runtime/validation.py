"""The documented ranges every decoded input record must respect, checked in one place.

Pure. A record can be valid Avro and still be hostile: a negative sequence or timestamp that
ClickHouse's unsigned columns refuse, NaN or infinite amounts that poison the forecaster, a
string of megabytes, a key that is not the workflow id (the record would sit on another
partition's owner). ``violation`` names the first field outside its range, so the record can go
to ``shadow.deadletter`` with that reason before it reaches the mirrors, the shadows or the sink.

The bounds are fixed constants, not the clock: a record refused once is refused again when a
partition is consumed again after a restart, and one accepted stays accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from schemas.records import HistoryEvent, Resources, StateSnapshot, TelemetryBatch

MAX_SEQUENCE = 1_000_000_000
"""Highest sequence number of a run (events count from 1; a snapshot may be at 0)."""
MAX_TIMESTAMP_MS = 4_102_444_800_000
"""Timestamps are epoch milliseconds in [0, 2100-01-01T00:00Z)."""
MAX_ATTEMPT = 1_000
"""Highest attempt number of an action (attempts count from 1)."""
MAX_BYTES = 2**50
"""Largest memory or network amount, and largest ``*_bytes`` attribute: 1 PiB."""
MAX_CPU_CORES = 100_000.0
"""Largest CPU amount, in cores."""
MAX_COST = 1e9
"""Largest cost amount."""
MAX_NUMBER = 2.0**53
"""Largest magnitude of any other number (attributes, state values): exact in a double."""
MAX_ID_CHARS = 512
"""Longest id or type name (workflow, run, action, workflow type, action type)."""
MAX_NAME_CHARS = 1_024
"""Longest attribute, label, variable or value name."""
MAX_TEXT_CHARS = 65_536
"""Longest string value (labels, state values, errors)."""
MAX_ENTRIES = 10_000
"""Most entries of one map (attributes, labels, values, variables)."""
MAX_SAMPLES = 100_000
"""Most samples in one telemetry batch."""

_AMOUNT_BOUNDS = {"cpu_cores": MAX_CPU_CORES, "memory_bytes": float(MAX_BYTES),
                  "network_bytes": float(MAX_BYTES), "cost": MAX_COST}


@dataclass(frozen=True)
class Violation:
    """A field outside its documented range, and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"invalid {self.field}: {self.reason}"


class _Invalid(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.violation = Violation(field, reason)


def violation(key: bytes | None, records: Sequence[object]) -> Violation | None:
    """The first violation among the records one message carried (one record, or an
    envelope's), with the message's ``key``; ``None`` when every record is in range.

    One bad record rejects the whole message: an envelope is the producer's unit, and storing
    part of it would leave a hole the mirror then reports as missing events."""
    try:
        for index, record in enumerate(records):
            prefix = f"[{index}]." if len(records) > 1 else ""
            try:
                _check_record(record)
            except _Invalid as exc:
                raise _Invalid(prefix + exc.violation.field, exc.violation.reason) from None
            workflow_id = getattr(record, "workflow_id", None)
            if key is None:
                raise _Invalid("key", "missing; it must be the workflow id")
            if workflow_id is not None and key != workflow_id.encode():
                raise _Invalid("key", f"{_short(key)} is not the workflow id "
                                      f"{_short(workflow_id)}")
    except _Invalid as exc:
        return exc.violation
    return None


def check_amount(name: str, value: float) -> Violation | None:
    """Whether ``value`` is a valid amount of resource class ``name`` (``cpu_cores``,
    ``memory_bytes``, ``network_bytes``, ``cost``): finite, non-negative, at most its bound."""
    try:
        _amount(name, name, value)
    except _Invalid as exc:
        return exc.violation
    return None


def _check_record(record: object) -> None:
    if isinstance(record, HistoryEvent):
        _check_event(record)
    elif isinstance(record, TelemetryBatch):
        _check_telemetry(record)
    elif isinstance(record, StateSnapshot):
        _check_snapshot(record)
    else:
        raise _Invalid("record", f"no rules for {type(record).__name__}")


def _check_event(e: HistoryEvent) -> None:
    _ids(("workflow_id", e.workflow_id), ("run_id", e.run_id))
    _text("workflow_type", e.workflow_type, MAX_ID_CHARS)
    _integer("sequence", e.sequence, 1, MAX_SEQUENCE)
    _integer("timestamp_ms", e.timestamp_ms, 0, MAX_TIMESTAMP_MS - 1)
    _text("action_id", e.action_id or "", MAX_ID_CHARS)
    _text("action_type", e.action_type or "", MAX_ID_CHARS)
    _integer("attempt", e.attempt, 1, MAX_ATTEMPT)
    _entries("attributes", e.attributes)
    for name, value in e.attributes.items():
        _attribute(name, value)
    _entries("labels", e.labels)
    for name, label in e.labels.items():
        _text(f"labels[{_short(name)}]", label, MAX_TEXT_CHARS)
    if e.declared is not None:
        _declared(e.declared)
    _values("values", e.values)
    _text("error", e.error or "", MAX_TEXT_CHARS)


def _check_telemetry(b: TelemetryBatch) -> None:
    _ids(("workflow_id", b.workflow_id), ("run_id", b.run_id), ("action_id", b.action_id))
    _text("action_type", b.action_type or "", MAX_ID_CHARS)
    _integer("attempt", b.attempt, 1, MAX_ATTEMPT)
    if len(b.timestamps_ms) > MAX_SAMPLES:
        raise _Invalid("timestamps_ms", f"{len(b.timestamps_ms)} samples, at most "
                                        f"{MAX_SAMPLES}")
    if not _within(b.timestamps_ms, 0, MAX_TIMESTAMP_MS - 1):
        for i, stamp in enumerate(b.timestamps_ms):
            _integer(f"timestamps_ms[{i}]", stamp, 0, MAX_TIMESTAMP_MS - 1)
    for name in ("cpu_cores", "memory_bytes", "network_bytes", "cost"):
        values = getattr(b, name)
        if not _within(values, 0.0, _AMOUNT_BOUNDS[name]):
            for i, value in enumerate(values):
                _amount(f"{name}[{i}]", name, value)


def _within(values: Sequence[float], low: float, high: float) -> bool:
    """Whether every value is finite and within [low, high], checked a column at a time by
    builtins: telemetry brings thousands of samples per message, and checking each alone (and
    naming it) was a quarter of folding them. ``False`` sends the caller to the per-value check
    that names the culprit."""
    if not values:
        return True
    try:
        return low <= min(values) and max(values) <= high and all(map(math.isfinite, values))
    except TypeError:  # a None or a non-number: the per-value check says which
        return False


def _check_snapshot(s: StateSnapshot) -> None:
    _ids(("workflow_id", s.workflow_id), ("run_id", s.run_id))
    _integer("sequence", s.sequence, 0, MAX_SEQUENCE)
    _integer("timestamp_ms", s.timestamp_ms, 0, MAX_TIMESTAMP_MS - 1)
    _values("variables", s.variables)


def _ids(*named: tuple[str, str]) -> None:
    for name, value in named:
        if not value:
            raise _Invalid(name, "empty")
        _text(name, value, MAX_ID_CHARS)


def _text(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise _Invalid(field, f"{len(value)} characters, at most {limit}")


def _integer(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise _Invalid(field, f"{value} is outside [{low}, {high}]")


def _finite(field: str, value: float, low: float, high: float) -> None:
    if not math.isfinite(value):
        raise _Invalid(field, f"{value} is not finite")
    if not low <= value <= high:
        raise _Invalid(field, f"{value} is outside [{low:g}, {high:g}]")


def _amount(field: str, resource: str, value: float | None) -> None:
    if value is not None:
        _finite(field, value, 0.0, _AMOUNT_BOUNDS[resource])


def _declared(declared: Resources) -> None:
    for name in _AMOUNT_BOUNDS:
        _amount(f"declared.{name}", name, getattr(declared, name))


def _attribute(name: str, value: float) -> None:
    field = f"attributes[{_short(name)}]"
    if len(name) > MAX_NAME_CHARS:
        raise _Invalid("attributes", f"a name of {len(name)} characters, at most "
                                     f"{MAX_NAME_CHARS}")
    resource = name.removeprefix("usage.")
    if resource in _AMOUNT_BOUNDS:
        _amount(field, resource, value)
    elif name.endswith("_bytes"):
        _finite(field, value, 0.0, float(MAX_BYTES))
    else:
        _finite(field, value, -MAX_NUMBER, MAX_NUMBER)


def _entries(field: str, mapping: Mapping[str, object]) -> None:
    if len(mapping) > MAX_ENTRIES:
        raise _Invalid(field, f"{len(mapping)} entries, at most {MAX_ENTRIES}")
    for name in _long_names(mapping):
        raise _Invalid(field, f"a name of {len(name)} characters, at most {MAX_NAME_CHARS}")


def _long_names(names: Iterable[str]) -> Iterable[str]:
    return (name for name in names if len(name) > MAX_NAME_CHARS)


def _values(field: str, values: Mapping[str, object]) -> None:
    _entries(field, values)
    for name, value in values.items():
        where = f"{field}[{_short(name)}]"
        if isinstance(value, str):
            _text(where, value, MAX_TEXT_CHARS)
        elif isinstance(value, float):
            _finite(where, value, -MAX_NUMBER, MAX_NUMBER)


def _short(value: str | bytes, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
