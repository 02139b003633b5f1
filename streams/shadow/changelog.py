"""Shadow workflows as records of the compacted ``shadow.shadows`` topic, and back (pure).

A record holds one run's whole shadow: its actions (in flight in full; finished ones only by
id, attempt and order, enough to recognise their events when they are delivered again), the
placeholders reserved ahead, the reservations the run holds with their command versions, so
commands made after a restore continue the same id sequence, the next-action transitions
learned for its workflow type, the offsets of the last input applied to it (what is consumed
again after a restore and already reflected is skipped), and its outbox: the effects it decided
that were not yet confirmed sent and stored (``streams.shadow.outbox``), sent again after a
restore. Records are canonical (keys sorted), so the same state always serializes to the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.forecasting.forecaster import Forecast
from streams.shadow.pool import Reservation
from streams.shadow.workflows import ActionShadow, Prediction, RunShadow, Usage

FORMAT = 1


def record_key(workflow_id: str, run_id: str) -> bytes:
    """The compaction key of a run's record."""
    return f"{workflow_id}\x1f{run_id}".encode()


@dataclass
class RestoredRun:
    """A run read back from its record: the shadow, what it holds, the command versions, and
    the transitions learned for its workflow type when it was written."""

    run: RunShadow
    reservations: list[Reservation]
    versions: dict[str, int]
    transitions: list[tuple[str | None, str, int]]
    outbox: list[dict[str, Any]] = field(default_factory=list)


_OUTBOX_SLOT = "\x00outbox\x00"
"""Stands for the outbox while the state is encoded; the outbox's own JSON replaces it."""


def shadow_record(run: RunShadow, reservations: Iterable[Reservation],
                  versions: Mapping[str, int],
                  transitions: Iterable[tuple[str | None, str, int]] = (),
                  outbox: Sequence[str] = ()) -> dict[str, Any]:
    """The ``ShadowRecord`` of a run holding ``reservations``. ``transitions``: what was learned
    of its workflow type's next actions; ``outbox``: its effects not yet confirmed sent, each
    step as the JSON text of its ``Outgoing.to_json`` form (``Outgoing.text``). They are
    spliced in as they are: a step stays in every record of its run until it is confirmed, and
    encoding it again for each was most of the time a worker spent under load."""
    state = {
        "transitions": [list(t) for t in transitions],
        "last_completed_type": run.last_completed_type, "finished_ms": run.finished_ms,
        "actions": [_action(a) for a in run.actions.values()],
        "likely": {t: _prediction(p) for t, p in run.likely.items()},
        "reservations": [_reservation(r) for r in reservations],
        "versions": dict(versions),
        "applied": dict(run.applied),
        "outbox": _OUTBOX_SLOT,
    }
    text = json.dumps(state, sort_keys=True, separators=(",", ":")).replace(
        json.dumps(_OUTBOX_SLOT), "[" + ",".join(outbox) + "]", 1)
    return {"workflow_id": run.workflow_id, "run_id": run.run_id,
            "workflow_type": run.workflow_type, "partition": run.partition, "format": FORMAT,
            "state": text}


def restore_run(record: Mapping[str, Any]) -> RestoredRun:
    """The run a ``ShadowRecord`` holds."""
    state = json.loads(record["state"])
    run = RunShadow(record["workflow_id"], record["run_id"], record["workflow_type"],
                    record["partition"], last_completed_type=state["last_completed_type"],
                    finished_ms=state["finished_ms"],
                    applied={k: int(v) for k, v in state.get("applied", {}).items()})
    for item in state["actions"]:
        action = _restore_action(item)
        run.actions[action.action_id] = action
    run.likely = {t: _restore_prediction(p) for t, p in state["likely"].items()}
    reservations = [_restore_reservation(r) for r in state["reservations"]]
    return RestoredRun(run, reservations, {k: int(v) for k, v in state["versions"].items()},
                       [(p, s, int(n)) for p, s, n in state.get("transitions", [])],
                       list(state.get("outbox", [])))


def restore_all(entries: Iterable[tuple[bytes, Mapping[str, Any] | None]]) -> list[RestoredRun]:
    """The runs of a partition's records, read in order: the last record of a key wins, and a
    tombstone (``None``) forgets it."""
    latest: dict[bytes, Mapping[str, Any] | None] = {}
    for key, record in entries:
        latest[key] = record
    return [restore_run(record) for record in latest.values() if record is not None]


def _action(action: ActionShadow) -> dict[str, Any]:
    if action.feedback_done and action.completed_ms is not None:
        return {"id": action.action_id, "type": action.action_type,
                "attempt": action.attempt, "order": action.order, "done": True}
    return {"id": action.action_id, "type": action.action_type, "attempt": action.attempt,
            "order": action.order, "input_bytes": action.input_bytes,
            "requested_memory": action.requested_memory, "started_ms": action.started_ms,
            "completed_ms": action.completed_ms, "feedback_done": action.feedback_done,
            "completion_seen_ms": action.completion_seen_ms, "usage": asdict(action.usage),
            "prediction": None if action.prediction is None else _prediction(action.prediction)}


def _restore_action(item: Mapping[str, Any]) -> ActionShadow:
    action = ActionShadow(item["id"], item["type"], item["attempt"], item["order"],
                          item.get("input_bytes", 0.0), item.get("requested_memory"))
    if item.get("done"):
        # Finished and scored: only its identity is kept, so its events count as repeats.
        action.started_ms = action.completed_ms = 0
        action.feedback_done = True
        return action
    action.started_ms, action.completed_ms = item["started_ms"], item["completed_ms"]
    action.feedback_done = item["feedback_done"]
    action.completion_seen_ms = item["completion_seen_ms"]
    action.usage = Usage(**item["usage"])
    action.prediction = (None if item["prediction"] is None
                         else _restore_prediction(item["prediction"]))
    return action


def _prediction(p: Prediction) -> dict[str, Any]:
    return {"action_id": p.action_id, "action_type": p.action_type,
            "forecasts": {r: asdict(f) for r, f in p.forecasts.items()},
            "allocation": p.allocation, "source": p.source, "confidence": p.confidence,
            "reservation_id": p.reservation_id, "issued_ms": p.issued_ms, "likely": p.likely,
            "issued_event_ms": p.issued_event_ms}


def _restore_prediction(item: Mapping[str, Any]) -> Prediction:
    forecasts = {r: Forecast(**f) for r, f in item["forecasts"].items()}
    return Prediction(item["action_id"], item["action_type"], forecasts,
                      dict(item["allocation"]), item["source"], item["confidence"],
                      item["reservation_id"], item["issued_ms"], item["likely"],
                      item["issued_event_ms"])


def _reservation(r: Reservation) -> dict[str, Any]:
    return asdict(r) | {"amounts": dict(r.amounts)}


def _restore_reservation(item: Mapping[str, Any]) -> Reservation:
    return Reservation(**item)
