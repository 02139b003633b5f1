"""The shadows' effects on their way out, written ahead with the state that decided them.

A step's effects (reservation commands, learned outcomes, alerts, rows for ClickHouse) are
written to the changelog *before* they are sent, in a step record the records of their runs
name, and stay named until they are sent and stored (``streams.shadow.changelog``). After a
crash the partition's new owner restores them, sends them again (same command ids, anomaly ids
and row keys, so consumers and ClickHouse deduplicate them) and skips the input the run records
already reflect. What a resource manager
received is therefore always what the restored state decided: a replay never decides again,
differently, with what the models learned in the meantime.

Pure: the effects become plain JSON-able records here; ``agents`` sends them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.records import RESOURCE_CLASSES, anomaly_record
from sinks.tables import FEEDBACK, PREDICTIONS, RESERVATIONS
from streams.shadow.changelog import step_key, step_record
from streams.shadow.pool import Alert, Command
from streams.shadow.workflows import Effects, Feedback, Prediction, RunShadow, ShadowWorkflows

RunKey = tuple[str, str]


@dataclass
class Outgoing:
    """One step's effects for one run, as they are sent: records for topics, rows by table."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    """``ReservationCommand`` records, in the order they must be published."""
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    """``ActionOutcome`` records."""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """``Anomaly`` records."""
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Rows by table name."""

    def text(self) -> str:
        """``to_json`` as canonical JSON text."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        """The form kept in a run's record."""
        return {"commands": self.commands, "outcomes": self.outcomes, "alerts": self.alerts,
                "rows": self.rows}

    def pieces(self, max_chars: int) -> list[tuple[Outgoing, str]]:
        """These effects as one or more pieces with their ``text``, each at most ``max_chars``
        long unless it is a single item: in order, so ``from_json`` of the pieces' forms is the
        whole again (each list keeps its order: a command never overtakes an earlier one)."""
        text = self.text()
        if len(text) <= max_chars:
            return [(self, text)]
        items = self._items()
        if len(items) <= 1:
            return [(self, text)]
        half = len(items) // 2
        return [*_of_items(items[:half]).pieces(max_chars),
                *_of_items(items[half:]).pieces(max_chars)]

    def _items(self) -> list[tuple[str, dict[str, Any]]]:
        """Every record and row, each with where it goes (a list name or ``rows:<table>``)."""
        return ([("commands", c) for c in self.commands]
                + [("outcomes", o) for o in self.outcomes]
                + [("alerts", a) for a in self.alerts]
                + [(f"rows:{table}", r) for table, rows in self.rows.items() for r in rows])

    @classmethod
    def from_json(cls, items: Iterable[Mapping[str, Any]]) -> Outgoing:
        """Back from a record's list of ``to_json`` forms, oldest first, as one."""
        whole = cls()
        for item in items:
            whole.commands += item["commands"]
            whole.outcomes += item["outcomes"]
            whole.alerts += item["alerts"]
            for table, rows in item["rows"].items():
                whole.rows.setdefault(table, []).extend(rows)
        return whole


def _of_items(items: Iterable[tuple[str, dict[str, Any]]]) -> Outgoing:
    out = Outgoing()
    for place, item in items:
        if place.startswith("rows:"):
            out.rows.setdefault(place[len("rows:"):], []).append(item)
        else:
            getattr(out, place).append(item)
    return out


def outgoing_by_run(effects: Effects, shadows: ShadowWorkflows,
                    stamp: int) -> dict[RunKey, Outgoing]:
    """``effects`` as the records and rows each run sends (``stamp``: the time they are
    stamped with, kept so a re-send is identical)."""
    by_run: dict[RunKey, Outgoing] = {}

    def of(workflow_id: str, run_id: str) -> Outgoing:
        out = by_run.get((workflow_id, run_id))
        if out is None:
            out = by_run[workflow_id, run_id] = Outgoing()
        return out

    for command in effects.commands:
        r = command.reservation
        out = of(r.workflow_id, r.run_id)
        out.commands.append(command_record(command))
        out.rows.setdefault(RESERVATIONS.name, []).append(command_row(command))
    for outcome in effects.outcomes:
        of(outcome["workflow_id"], outcome["run_id"]).outcomes.append(outcome)
    for alert in effects.alerts:
        of(alert.workflow_id, alert.run_id).alerts.append(alert_record(alert, stamp))
    for run, prediction in effects.predictions:
        of(run.workflow_id, run.run_id).rows.setdefault(PREDICTIONS.name, []).append(
            prediction_row(run, prediction))
    for feedback in effects.feedback:
        of(feedback.workflow_id, feedback.run_id).rows.setdefault(FEEDBACK.name, []).append(
            feedback_row(feedback, shadows, stamp))
    return by_run


MAX_RECORD_BYTES = 512 * 1024
"""Largest step record: half the producer's default limit of 1 MiB."""

ENTRY_OVERHEAD = 200
"""Bytes a run's entry in a step record takes beyond its effects' text (its ids, quoting)."""


@dataclass
class StepRecords:
    """A step's effects packed as step records, and what could not be written ahead."""

    records: list[tuple[bytes, dict[str, Any], int]] = field(default_factory=list)
    """(key, ``ShadowRecord``, partition), in the order they must be written."""
    unwritten: list[tuple[RunKey, Outgoing]] = field(default_factory=list)
    """Single records or rows too large for any step record (sent without being written
    ahead)."""


def step_records(step_id: str, entries: Iterable[tuple[RunKey, int, bool, Outgoing]],
                 max_bytes: int = MAX_RECORD_BYTES) -> StepRecords:
    """A step's entries (run, partition, whether the run's record must name the step, its
    effects) as step records, one or more per partition, each under ``max_bytes``. A run's
    effects too large for one record are split in order across several (a restore sends the
    pieces again one after the other, as the whole): a large batch is written ahead like a
    small one."""
    parts: dict[int, list[list[tuple[str, str, bool, str]]]] = {}
    sizes: dict[int, int] = {}
    packed = StepRecords()
    for key, partition, named, out in entries:
        for piece, text in out.pieces(max_bytes - ENTRY_OVERHEAD):
            size = len(text) + ENTRY_OVERHEAD
            if size > max_bytes:
                packed.unwritten.append((key, piece))
                continue
            chunks = parts.setdefault(partition, [[]])
            if sizes.get(partition, 0) + size > max_bytes and chunks[-1]:
                chunks.append([])
                sizes[partition] = 0
            sizes[partition] = sizes.get(partition, 0) + size
            chunks[-1].append((*key, named, text))
    packed.records = [(step_key(f"{step_id}.{partition}.{index}"),
                       step_record(step_id, partition, chunk), partition)
                      for partition, chunks in sorted(parts.items())
                      for index, chunk in enumerate(chunks)]
    return packed


class Outbox:
    """Which steps hold each run's effects not yet confirmed sent and stored (by step id:
    the run's record names them, see ``streams.shadow.changelog``)."""

    def __init__(self) -> None:
        self._steps_of: dict[RunKey, list[str]] = {}
        self._runs_of: dict[str, set[RunKey]] = {}

    def add(self, step_id: str, keys: Iterable[RunKey]) -> None:
        """The step ``step_id`` holds effects of these runs until ``confirm``."""
        runs = self._runs_of.setdefault(step_id, set())
        for key in keys:
            if key not in runs:
                runs.add(key)
                self._steps_of.setdefault(key, []).append(step_id)

    def steps_of(self, key: RunKey) -> list[str]:
        """The steps holding a run's unconfirmed effects, oldest first."""
        return list(self._steps_of.get(key, ()))

    def confirm(self, step_id: str) -> None:
        """A step's effects are sent and stored: no record needs to name it any more."""
        for key in self._runs_of.pop(step_id, ()):
            held = self._steps_of.get(key)
            if held is not None:
                held.remove(step_id)
                if not held:
                    del self._steps_of[key]

    def forget(self, keys: Iterable[RunKey]) -> None:
        """Runs this worker no longer owns (their new owner sends their effects again)."""
        for key in keys:
            self._steps_of.pop(key, None)

    def __len__(self) -> int:
        return len(self._runs_of)


def command_record(command: Command) -> dict[str, Any]:
    """The ``ReservationCommand`` record of a command."""
    r = command.reservation
    return {"command_id": command.command_id, "reservation_id": r.reservation_id,
            "op": command.op, "workflow_id": r.workflow_id, "run_id": r.run_id,
            "action_id": r.action_id, "action_type": r.action_type,
            "resources": {"cpu_cores": r.amounts.get("cpu_cores"),
                          "memory_bytes": _int(r.amounts.get("memory_bytes")),
                          "network_bytes": _int(r.amounts.get("network_bytes")),
                          "cost": r.amounts.get("cost")},
            "confidence": r.confidence, "source": r.source, "issued_ms": r.issued_ms,
            "expires_ms": r.expires_ms}


def command_row(command: Command) -> dict[str, Any]:
    """The ``reservations`` row of a command."""
    r = command.reservation
    amounts = {name: r.amounts.get(name, 0.0) for name in RESOURCE_CLASSES}
    return {"command_id": command.command_id, "op": command.op,
            "reservation_id": r.reservation_id, "workflow_id": r.workflow_id,
            "run_id": r.run_id, "action_id": r.action_id, "action_type": r.action_type,
            **amounts, "confidence": r.confidence, "source": r.source,
            "issued_ms": r.issued_ms, "expires_ms": r.expires_ms, "reason": command.reason}


def prediction_row(run: RunShadow, p: Prediction) -> dict[str, Any]:
    """The ``predictions`` row of a forecast."""
    return {"workflow_id": run.workflow_id, "run_id": run.run_id,
            "workflow_type": run.workflow_type, "action_id": p.action_id,
            "action_type": p.action_type, "predicted_next": int(p.likely), "source": p.source,
            "confidence": p.confidence,
            **{name: p.allocation[name] for name in RESOURCE_CLASSES},
            "reservation_id": p.reservation_id or "", "issued_ms": p.issued_ms}


def alert_record(alert: Alert, stamp: int) -> dict[str, Any]:
    """The ``Anomaly`` record of a sizing or reservation alert."""
    return anomaly_record(kind=alert.kind, severity=alert.severity,
                          workflow_id=alert.workflow_id, run_id=alert.run_id, sequence=0,
                          score=0.0, message=alert.message, detected_ms=stamp,
                          action_id=alert.action_id)


def feedback_row(feedback: Feedback, shadows: ShadowWorkflows, stamp: int) -> dict[str, Any]:
    """The ``feedback`` row of a scored forecast."""
    run = shadows.runs.get((feedback.workflow_id, feedback.run_id))
    action = run.actions.get(feedback.action_id) if run else None
    runtime = (((action.completed_ms or 0) - (action.started_ms or 0)) / 1000
               if action and action.started_ms is not None else 0.0)
    return {"workflow_id": feedback.workflow_id, "run_id": feedback.run_id,
            "workflow_type": run.workflow_type if run else "",
            "action_id": feedback.action_id, "action_type": feedback.action_type,
            "source": feedback.source, "confidence": feedback.confidence,
            **{f"predicted_{name}": feedback.predicted.get(name, 0.0)
               for name in RESOURCE_CLASSES},
            **{f"actual_{name}": feedback.actual.get(name, 0.0) for name in RESOURCE_CLASSES},
            "deviation": feedback.deviation, "underprovisioned": int(feedback.underprovisioned),
            "runtime_s": max(0.0, runtime),
            "lead_time_ms": -1 if feedback.lead_time_ms is None else feedback.lead_time_ms,
            "recorded_ms": stamp}


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)
