"""Shadow workflows as records of the compacted ``shadow.shadows`` topic, and back (pure).

A record holds one run's whole shadow: its actions (in flight in full; finished ones only by
id, attempt and order, enough to recognise their events when they are delivered again), the
placeholders reserved ahead, the reservations the run holds with their command versions, so
commands made after a restore continue the same id sequence, the next-action transitions
learned for its workflow type, the offsets of the last input applied to it (what is consumed
again after a restore and already reflected is skipped), and the ids of the steps whose
effects it decided and that are not yet confirmed sent. Records are canonical (keys sorted), so
the same state always serializes to the same bytes.

A record does not grow with the run: once ``SEAL_EVERY`` completed actions have gathered in
it, they are written once in a **sealed chunk** of their own (``FORMAT_SEALED``, key
``chunk_key(workflow, run, index)``), never rewritten, and left out of the run's later records,
which say how many chunks the run has; the versions of their reservations (which get no command
again) are dropped. A restore merges the chunks the record counts into the run. A finished
action (scored) is sealed by identity; one still awaiting its feedback (its telemetry may come
for minutes, or never) is sealed in full and stays in memory: later records name it only once
its usage changed (that usage alone) or it was scored (by identity, to be sealed so in a later
chunk, which supersedes the earlier one). Without that, every step rewrote every awaiting
action of the runs it touched: with no telemetry, records grew with the whole run and the
bytes written per event with it.

A step's effects (``streams.shadow.outbox``) are written once, before the records of the runs
that decided them, as a **step record** per partition (``FORMAT_STEP``), tombstoned once they
are sent and stored. On a restore, a run's entry in a step record is sent again if the run's
record names that step; if it does not (the worker died between the two writes, so the effects
were never sent either), the entry is an orphan and is dropped: the new owner consumes that
input again and decides anew, and no later record of the run can name that step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from streams.forecasting.forecaster import Forecast
from streams.shadow.pool import Reservation
from streams.shadow.workflows import ActionShadow, Prediction, RunShadow, Usage

FORMAT = 1
"""A run's record."""
FORMAT_STEP = 2
"""A step record: effects of one step on one partition, not yet confirmed sent and stored."""
FORMAT_SEALED = 3
"""A sealed chunk: completed actions of a run, written once: by identity if scored, in full if
awaiting their feedback."""

SEAL_EVERY = 50
"""Completed actions a run's record gathers before they are sealed in a chunk (about 3 kB). Every
step touching a run re-encodes its record, so what a record carries is paid per step: with 500,
records of busy runs were tens of kB each and encoding them dominated a short batch window's
steps (``bench/bench_reservation_latency.py``)."""


def record_key(workflow_id: str, run_id: str) -> bytes:
    """The compaction key of a run's record."""
    return f"{workflow_id}\x1f{run_id}".encode()


def chunk_key(workflow_id: str, run_id: str, index: int) -> bytes:
    """The compaction key of a run's sealed chunk number ``index``."""
    return record_key(workflow_id, run_id) + f"\x1fsealed\x1f{index}".encode()


@dataclass(frozen=True)
class Chunk:
    """A sealed chunk to write (``record``, a ``ShadowRecord``), and the reservations of its
    actions, whose versions are no longer needed."""

    key: bytes
    record: dict[str, Any]
    reservation_ids: list[str]


def seal_finished(run: RunShadow, every: int = SEAL_EVERY) -> Chunk | None:
    """Seal the completed actions gathered in ``run``'s record, once there are ``every`` of
    them, in a chunk to write before the next record. The finished ones leave ``run.actions``
    for ``run.sealed`` (identity only: left out of its records and its memory from now on);
    those awaiting feedback are sealed in full and stay (``ActionShadow.sealed_in``)."""
    finished = [a for a in run.actions.values() if _sealable(a)]
    if len(finished) < every:
        return None
    finished.sort(key=lambda a: (a.order, a.action_id, a.attempt))
    index = run.sealed_chunks
    for action in finished:
        if _finished(action):
            del run.actions[action.action_id]
            run.sealed[action.action_id] = (action.attempt, action.order)
        else:
            action.sealed_in, action.sealed_usage = index, replace(action.usage)
    run.sealed_chunks += 1
    state = {"index": index, "actions": [_action(a) for a in finished]}
    record = {"workflow_id": run.workflow_id, "run_id": run.run_id,
              "workflow_type": run.workflow_type, "partition": run.partition,
              "format": FORMAT_SEALED,
              "state": json.dumps(state, sort_keys=True, separators=(",", ":"))}
    rids = [a.prediction.reservation_id for a in finished
            if a.prediction is not None and a.prediction.reservation_id]
    return Chunk(chunk_key(run.workflow_id, run.run_id, index), record, rids)


@dataclass
class RestoredRun:
    """A run read back from its record: the shadow, what it holds, the command versions, and
    the transitions learned for its workflow type when it was written."""

    run: RunShadow
    reservations: list[Reservation]
    versions: dict[str, int]
    transitions: list[tuple[str | None, str, int]]
    steps: list[str] = field(default_factory=list)
    """The step records holding its unconfirmed effects."""
    sealed_updates: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """By id, the usage since of actions sealed in full while awaiting feedback (merged with
    their chunks by ``restore_all``)."""


@dataclass(frozen=True)
class StepEntry:
    """One run's effects in a step record to send again (``outgoing``: ``Outgoing.to_json``)."""

    workflow_id: str
    run_id: str
    outgoing: Mapping[str, Any]


@dataclass
class Restored:
    """A partition's records read back: its runs, the effects to send again (entries whose
    run's record reflects them, in log order) and the keys of every step record read (the new
    owner tombstones them once what they hold is written again)."""

    runs: list[RestoredRun] = field(default_factory=list)
    resend: list[StepEntry] = field(default_factory=list)
    orphans: int = 0
    steps: list[bytes] = field(default_factory=list)
    missing_chunks: int = 0
    """Sealed chunks a run's record counts that were not found (their actions' repeated
    events would not be recognised)."""


def step_key(step_id: str) -> bytes:
    """The key of a step record (``step_id``: unique, a random hex string)."""
    return f"\x1estep\x1f{step_id}".encode()


def step_record(step_id: str, partition: int, entries: Sequence[tuple[str, str, bool, str]],
                ) -> dict[str, Any]:
    """The ``ShadowRecord`` of a step's effects on ``partition``: ``entries`` are (workflow,
    run, named, ``Outgoing.text()``), the texts spliced in as they are (encoded once)."""
    body = ",".join(f"[{json.dumps(w)},{json.dumps(r)},{json.dumps(named)},{text}]"
                    for w, r, named, text in entries)
    return {"workflow_id": "", "run_id": step_id, "workflow_type": "", "partition": partition,
            "format": FORMAT_STEP, "state": f'{{"entries":[{body}]}}'}


def shadow_record(run: RunShadow, reservations: Iterable[Reservation],
                  versions: Mapping[str, int],
                  transitions: Iterable[tuple[str | None, str, int]] = (),
                  steps: Iterable[str] = ()) -> dict[str, Any]:
    """The ``ShadowRecord`` of a run holding ``reservations``. ``transitions``: what was learned
    of its workflow type's next actions; ``steps``: the ids of the step records holding its
    effects not yet confirmed."""
    state = {
        "transitions": [list(t) for t in transitions],
        "last_completed_type": run.last_completed_type, "finished_ms": run.finished_ms,
        "actions": [entry for a in run.actions.values()
                    if (entry := _record_entry(a)) is not None],
        "sealed_chunks": run.sealed_chunks,
        "likely": {t: _prediction(p) for t, p in run.likely.items()},
        "reservations": [_reservation(r) for r in reservations],
        "versions": dict(versions),
        "applied": dict(run.applied),
        "steps": sorted(steps),
    }
    return {"workflow_id": run.workflow_id, "run_id": run.run_id,
            "workflow_type": run.workflow_type, "partition": run.partition, "format": FORMAT,
            "state": json.dumps(state, sort_keys=True, separators=(",", ":"))}


def restore_run(record: Mapping[str, Any]) -> RestoredRun:
    """The run a ``ShadowRecord`` holds."""
    state = json.loads(record["state"])
    updates: dict[str, Mapping[str, Any]] = {}
    run = RunShadow(record["workflow_id"], record["run_id"], record["workflow_type"],
                    record["partition"], last_completed_type=state["last_completed_type"],
                    finished_ms=state["finished_ms"],
                    applied={k: int(v) for k, v in state.get("applied", {}).items()},
                    sealed_chunks=int(state.get("sealed_chunks", 0)))
    for item in state["actions"]:
        if "sealed_in" in item:  # a sealed action's usage since: merged with its chunk
            updates[item["id"]] = item
            continue
        action = _restore_action(item)
        run.actions[action.action_id] = action
    run.likely = {t: _restore_prediction(p) for t, p in state["likely"].items()}
    reservations = [_restore_reservation(r) for r in state["reservations"]]
    return RestoredRun(run, reservations, {k: int(v) for k, v in state["versions"].items()},
                       [(p, s, int(n)) for p, s, n in state.get("transitions", [])],
                       list(state.get("steps", [])), updates)


def restore_all(entries: Iterable[tuple[bytes, Mapping[str, Any] | None]]) -> Restored:
    """A partition's records, read in order: the last record of a key wins, and a tombstone
    (``None``) forgets it. Step entries are sent again if their run's record reflects them."""
    latest: dict[bytes, Mapping[str, Any] | None] = {}
    for key, record in entries:
        latest[key] = record
    restored = Restored()
    named: dict[tuple[str, str], set[str]] = {}
    steps: list[Mapping[str, Any]] = []
    chunks: dict[tuple[str, str, int], Mapping[str, Any]] = {}
    for key, record in latest.items():
        if record is None:
            continue
        if record["format"] == FORMAT_STEP:
            restored.steps.append(key)
            steps.append(record)
            continue
        if record["format"] == FORMAT_SEALED:
            state = json.loads(record["state"])
            chunks[(record["workflow_id"], record["run_id"], int(state["index"]))] = state
            continue
        run = restore_run(record)
        restored.runs.append(run)
        named[(record["workflow_id"], record["run_id"])] = set(run.steps)
    for item in restored.runs:
        restored.missing_chunks += _merge_sealed(item.run, chunks, item.sealed_updates)
    for record in steps:
        for workflow_id, run_id, must_be_named, outgoing in json.loads(
                record["state"])["entries"]:
            if not must_be_named or record["run_id"] in named.get((workflow_id, run_id), ()):
                restored.resend.append(StepEntry(workflow_id, run_id, outgoing))
            else:
                restored.orphans += 1
    return restored


def _merge_sealed(run: RunShadow, chunks: Mapping[tuple[str, str, int], Mapping[str, Any]],
                  updates: Mapping[str, Mapping[str, Any]]) -> int:
    """Put the actions of the sealed chunks ``run``'s record counts back, in chunk order: the
    finished ones into ``run.sealed``, those awaiting feedback into ``run.actions`` with the
    usage ``updates`` (by id) the record holds for them (a chunk numbered beyond the count is
    one whose record never followed: its actions are in the record). An action's latest
    attempt wins, and a later chunk's word on an attempt supersedes an earlier one's. Returns
    how many counted chunks are missing."""
    missing = 0
    for index in range(run.sealed_chunks):
        chunk = chunks.get((run.workflow_id, run.run_id, index))
        if chunk is None:
            missing += 1
            continue
        for item in chunk["actions"]:
            action_id, attempt = item["id"], int(item["attempt"])
            present = run.actions.get(action_id)
            if present is not None and (present.attempt > attempt or (
                    present.attempt == attempt and present.sealed_in is None)):
                continue  # the record holds a later attempt, or this one's later state
            sealed = run.sealed.get(action_id)
            if sealed is not None and sealed[0] > attempt:
                continue
            if present is not None:
                del run.actions[action_id]  # sealed awaiting in an earlier chunk
            if item.get("done"):
                run.sealed[action_id] = (attempt, int(item["order"]))
                continue
            run.sealed.pop(action_id, None)
            action = _restore_action(item)
            action.sealed_in, action.sealed_usage = index, replace(action.usage)
            update = updates.get(action_id)
            if update is not None and int(update["attempt"]) == attempt:
                action.usage = Usage(**update["usage"])
            run.actions[action_id] = action
    return missing


def _finished(action: ActionShadow) -> bool:
    """Whether an action is over and scored: only its identity is kept."""
    return action.feedback_done and action.completed_ms is not None


def _sealable(action: ActionShadow) -> bool:
    """Whether an action is to go in the next sealed chunk: finished, or completed and not
    sealed yet."""
    return _finished(action) or (action.completed_ms is not None and action.sealed_in is None)


def _record_entry(action: ActionShadow) -> dict[str, Any] | None:
    """What a run's record holds of an action: all of it, or for one sealed in full while it
    awaits feedback, its usage if that changed since, else nothing."""
    if action.sealed_in is None or _finished(action):
        return _action(action)
    if action.usage == action.sealed_usage:
        return None
    return {"id": action.action_id, "attempt": action.attempt, "sealed_in": action.sealed_in,
            "usage": _flat(action.usage)}


def _action(action: ActionShadow) -> dict[str, Any]:
    if _finished(action):
        return {"id": action.action_id, "type": action.action_type,
                "attempt": action.attempt, "order": action.order, "done": True}
    return {"id": action.action_id, "type": action.action_type, "attempt": action.attempt,
            "order": action.order, "input_bytes": action.input_bytes,
            "requested_memory": action.requested_memory, "started_ms": action.started_ms,
            "completed_ms": action.completed_ms, "feedback_done": action.feedback_done,
            "completion_seen_ms": action.completion_seen_ms, "usage": _flat(action.usage),
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
            "forecasts": {r: _flat(f) for r, f in p.forecasts.items()},
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
    return _flat(r) | {"amounts": dict(r.amounts)}


def _flat(item: Any) -> dict[str, Any]:
    """A dataclass of plain fields as a dict: ``asdict`` without its deep copy, which records
    written at every step cannot afford."""
    slots = getattr(type(item), "__slots__", None)
    return dict(vars(item)) if slots is None else {name: getattr(item, name) for name in slots}


def _restore_reservation(item: Mapping[str, Any]) -> Reservation:
    return Reservation(**item)
