"""What the shadows learn, as ``ActionOutcome`` records every worker follows (pure).

An action's usage (``USAGE``) teaches the forecaster of its (workflow type, action type); the
order in which action types are scheduled (``TRANSITION``) teaches what to reserve ahead. The
worker that learned a fact first publishes it on ``shadow.outcomes``; every other worker, and
this one after a restart, learns it from there. A record repeated (a re-sent batch) teaches
nothing twice: ``Seen`` remembers the recent identities.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from streams.forecasting.sizing import TaskContext

USAGE, TRANSITION = "USAGE", "TRANSITION"
FORECAST_RESOURCE = {"memory_bytes": "memory", "cpu_cores": "cpu", "network_bytes": "network",
                     "cost": "cost"}
"""The forecaster's name of each resource class."""


def usage_outcome(learner: str, identity: tuple[str, str, str, int], workflow_type: str,
                  action_type: str, input_bytes: float, actual: Mapping[str, float],
                  allocated_memory: float, runtime_s: float) -> dict[str, Any]:
    """The ``ActionOutcome`` of an action attempt's usage; ``identity``: (workflow, run,
    action, attempt)."""
    workflow_id, run_id, action_id, attempt = identity
    return {"learner": learner, "workflow_id": workflow_id, "run_id": run_id,
            "workflow_type": workflow_type, "action_id": action_id, "action_type": action_type,
            "attempt": attempt, "input_bytes": float(input_bytes),
            "actual": {"cpu_cores": actual.get("cpu_cores"),
                       "memory_bytes": _whole(actual.get("memory_bytes")),
                       "network_bytes": _whole(actual.get("network_bytes")),
                       "cost": actual.get("cost")},
            "allocated_memory_bytes": float(allocated_memory), "runtime_s": float(runtime_s),
            "previous_type": None, "kind": USAGE}


def transition_outcome(learner: str, identity: tuple[str, str, str, int], workflow_type: str,
                       action_type: str, previous_type: str | None) -> dict[str, Any]:
    """The ``ActionOutcome`` saying ``action_type`` was scheduled after ``previous_type``."""
    workflow_id, run_id, action_id, attempt = identity
    return {"learner": learner, "workflow_id": workflow_id, "run_id": run_id,
            "workflow_type": workflow_type, "action_id": action_id, "action_type": action_type,
            "attempt": attempt, "input_bytes": 0.0,
            "actual": {"cpu_cores": None, "memory_bytes": None, "network_bytes": None,
                       "cost": None},
            "allocated_memory_bytes": 0.0, "runtime_s": 0.0, "previous_type": previous_type,
            "kind": TRANSITION}


def outcome_key(record: Mapping[str, Any]) -> bytes:
    """The record's key: its identity (compaction then drops only repeats)."""
    return "\x1f".join((record["kind"], record["workflow_id"], record["run_id"],
                        record["action_id"], str(record["attempt"]))).encode()


def observations(record: Mapping[str, Any]) -> tuple[TaskContext, list[tuple[str, float]]]:
    """A ``USAGE`` record as what the forecaster observes: the task, and (resource, value)."""
    task = TaskContext(record["workflow_type"], record["run_id"], record["action_type"],
                       record["attempt"], record["input_bytes"])
    values = [(FORECAST_RESOURCE[name], float(value))
              for name, value in record["actual"].items() if value is not None]
    return task, values


class Seen:
    """The identities of the most recent ``capacity`` records taken."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[bytes, None] = OrderedDict()

    def first_time(self, key: bytes) -> bool:
        """Whether ``key`` was not among the recent ones (it is now)."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)
