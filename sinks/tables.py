"""The ClickHouse tables the sink writes, their insert columns, and records turned into columns.

Rows carry deterministic ids derived from the record's identity (``workflow_events`` computes its
``row_id`` in ClickHouse, as ``cityHash64`` of the identity), and every table is a
ReplacingMergeTree keyed on that identity, so a batch delivered twice (after a crash, before the
Kafka offsets were committed) collapses into one row: queries with ``FINAL`` stay exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.ids import stable_int
from schemas.records import HistoryEvent


@dataclass(frozen=True)
class TableSpec:
    """A table's name and the columns the sink inserts, in insert order."""

    name: str
    columns: tuple[str, ...]


WORKFLOW_EVENTS = TableSpec("workflow_events", (
    "workflow_id", "run_id", "workflow_type", "sequence", "kind", "timestamp_ms",
    "action_id", "action_type", "attempt", "attributes.key", "attributes.value",
    "labels.key", "labels.value", "declared_cpu_cores", "declared_memory_bytes",
    "declared_network_bytes", "declared_cost", "state.name", "state.value", "error",
    "source_partition", "source_offset",
))


ANOMALIES = TableSpec("anomalies", (
    "row_id", "anomaly_id", "workflow_id", "run_id", "sequence", "kind", "severity", "score",
    "detected_ms", "message", "action_id", "variables.name", "variables.status",
    "variables.primary_value", "variables.mirror_value", "variables.weight",
    "variables.contribution",
))


class LocatedEvent(Protocol):
    """A history event with the partition and offset of the message that carried it."""

    @property
    def event(self) -> HistoryEvent: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def workflow_event_columns(located: Sequence[LocatedEvent]) -> list[list[Any]]:
    """``workflow_events`` columns (in ``WORKFLOW_EVENTS.columns`` order) for the events."""
    # Column by column: one comprehension each is several times faster than scattering rows.
    events = [item.event for item in located]
    declared = [e.declared for e in events]
    return [
        [e.workflow_id for e in events], [e.run_id for e in events],
        [e.workflow_type for e in events], [e.sequence for e in events],
        [e.kind.value for e in events], [e.timestamp_ms for e in events],
        [e.action_id or "" for e in events], [e.action_type or "" for e in events],
        [e.attempt for e in events],
        [list(e.attributes) for e in events], [list(e.attributes.values()) for e in events],
        [list(e.labels) for e in events], [list(e.labels.values()) for e in events],
        [d.cpu_cores if d else None for d in declared],
        [d.memory_bytes if d else None for d in declared],
        [d.network_bytes if d else None for d in declared],
        [d.cost if d else None for d in declared],
        [list(e.values) for e in events],
        [[json.dumps(v) for v in e.values.values()] for e in events],
        [e.error or "" for e in events],
        [item.partition for item in located], [item.offset for item in located],
    ]


def anomaly_columns(anomalies: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """``anomalies`` columns for ``Anomaly`` records (values of variables as JSON text)."""
    return columns_of(ANOMALIES, [_anomaly_row(a) for a in anomalies])


def _anomaly_row(a: Mapping[str, Any]) -> dict[str, Any]:
    variables = a["variables"]
    action_id = a.get("action_id") or ""
    return {
        "row_id": stable_int(a["kind"], a["workflow_id"], a["run_id"], a["sequence"], action_id),
        "anomaly_id": a["anomaly_id"], "workflow_id": a["workflow_id"], "run_id": a["run_id"],
        "sequence": a["sequence"], "kind": a["kind"], "severity": a["severity"],
        "score": a["score"], "detected_ms": a["detected_ms"], "message": a["message"],
        "action_id": action_id,
        "variables.name": [v["name"] for v in variables],
        "variables.status": [v["status"] for v in variables],
        "variables.primary_value": [json.dumps(v["primary"]) for v in variables],
        "variables.mirror_value": [json.dumps(v["mirror"]) for v in variables],
        "variables.weight": [v["weight"] for v in variables],
        "variables.contribution": [v["contribution"] for v in variables],
    }


PREDICTIONS = TableSpec("predictions", (
    "workflow_id", "run_id", "workflow_type", "action_id", "action_type", "predicted_next",
    "source", "confidence", "memory_bytes", "cpu_cores", "network_bytes", "cost",
    "reservation_id", "issued_ms"))

FEEDBACK = TableSpec("feedback", (
    "workflow_id", "run_id", "workflow_type", "action_id", "action_type", "source",
    "confidence", "predicted_memory_bytes", "predicted_cpu_cores", "predicted_network_bytes",
    "predicted_cost", "actual_memory_bytes", "actual_cpu_cores", "actual_network_bytes",
    "actual_cost", "deviation", "underprovisioned", "runtime_s", "lead_time_ms", "recorded_ms"))

ACTION_USAGE = TableSpec("action_usage", (
    "workflow_id", "run_id", "action_id", "action_type", "attempt", "window_start_ms",
    "batch_first_ms", "samples", "cpu_peak", "cpu_mean", "memory_peak", "memory_mean",
    "network_bytes", "cost"))

RESERVATIONS = TableSpec("reservations", (
    "command_id", "op", "reservation_id", "workflow_id", "run_id", "action_id", "action_type",
    "memory_bytes", "cpu_cores", "network_bytes", "cost", "confidence", "source", "issued_ms",
    "expires_ms", "reason"))


def columns_of(spec: TableSpec, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows (mappings from column name to value) turned into columns in ``spec.columns``
    order; a row that lacks a column or has one the table does not raises ``ValueError``."""
    expected = set(spec.columns)
    for row in rows:
        if row.keys() != expected:
            raise ValueError(f"{spec.name}: row columns differ from the table's: missing "
                             f"{sorted(expected - row.keys())}, unknown "
                             f"{sorted(row.keys() - expected)}")
    return [[row[name] for row in rows] for name in spec.columns]


ALL_TABLES = (WORKFLOW_EVENTS, ANOMALIES, PREDICTIONS, FEEDBACK, ACTION_USAGE, RESERVATIONS)
"""Every table the sink writes."""
