"""Temporal history events translated: one shadowflow event per Temporal event, sequence = event
id, activities as actions, memos as state, a promoted run's state on its start."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("temporalio", reason="the temporal extra is not installed "
                                         "(pip install -e '.[temporal]')")

from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent as TemporalEvent

from schemas.records import EventKind
from streams.mirror.definitions import DEFAULT
from streams.mirror.run import rebuild
from streams.temporal.translate import RunTranslator, command_task, scalars


def payload(value: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def event(event_id: int, event_type: int, **attributes: object) -> TemporalEvent:
    made = TemporalEvent(event_id=event_id, event_type=event_type, **attributes)
    made.event_time.FromMilliseconds(1_700_000_000_000 + event_id)
    return made


def history(resume: dict[str, object] | None = None) -> list[TemporalEvent]:
    started = {"workflow_type": {"name": "Pipeline"},
               "input": Payloads(payloads=[payload(
                   {"shadowflow_resume": resume} if resume else {"steps": 1})])}
    return [
        event(1, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
              workflow_execution_started_event_attributes=started),
        event(2, EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED),
        event(3, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED),
        event(4, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
        event(5, EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
              workflow_properties_modified_event_attributes={
                  "workflow_task_completed_event_id": 4,
                  "upserted_memo": {"fields": {"total": payload(0), "nested": payload([1])}}}),
        event(6, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
              activity_task_scheduled_event_attributes={
                  "activity_id": "step-0", "activity_type": {"name": "crunch"},
                  "workflow_task_completed_event_id": 4}),
        event(7, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
              activity_task_started_event_attributes={"scheduled_event_id": 6, "attempt": 2}),
        event(8, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
              activity_task_completed_event_attributes={
                  "scheduled_event_id": 6, "result": Payloads(payloads=[payload(
                      {"value": 7, "ratio": float("nan"), "ok": True, "list": [1]})])}),
        event(9, EventType.EVENT_TYPE_TIMER_STARTED),
        event(10, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
              workflow_execution_completed_event_attributes={
                  "workflow_task_completed_event_id": 4}),
    ]


def test_each_event_once_in_sequence() -> None:
    translated = RunTranslator("w", "r").translate_all(history())
    assert [e.sequence for e in translated] == list(range(1, 11))
    assert [e.kind for e in translated] == [
        EventKind.WORKFLOW_STARTED, *[EventKind.STATE_UPDATED] * 4, EventKind.ACTION_SCHEDULED,
        EventKind.ACTION_STARTED, EventKind.ACTION_COMPLETED, EventKind.STATE_UPDATED,
        EventKind.WORKFLOW_COMPLETED]
    assert {e.workflow_type for e in translated} == {"Pipeline"}
    assert translated[3].labels["temporal.event_type"] == "WORKFLOW_TASK_COMPLETED"
    assert translated[4].values == {"total": 0}  # the memo's scalars
    started, completed = translated[6], translated[7]
    assert (started.action_id, started.action_type, started.attempt) == ("step-0", "crunch", 2)
    assert (completed.action_id, completed.values) == ("step-0", {"value": 7, "ok": True})
    assert translated[0].timestamp_ms == 1_700_000_000_001


def test_the_mirror_of_a_translated_history() -> None:
    mirror = rebuild(RunTranslator("w", "r").translate_all(history()), DEFAULT)
    assert mirror.variables == {
        "wf.status": "COMPLETED", "wf.actions.scheduled": 1, "wf.actions.started": 1,
        "wf.actions.completed": 1, "wf.actions.failed": 0, "action.step-0": "COMPLETED",
        "result.step-0.value": 7, "result.step-0.ok": True, "total": 0}
    assert mirror.gaps == []


def test_a_promoted_run_starts_from_its_state() -> None:
    resumed = RunTranslator("w", "r2").translate_all(history({"total": 21, "step": 3}))
    assert resumed[0].values == {"total": 21, "step": 3}
    mirror = rebuild(resumed[:1], DEFAULT)
    assert mirror.variables["step"] == 3 and mirror.variables["wf.status"] == "RUNNING"


def test_commands_name_their_workflow_task() -> None:
    events = history()
    assert [command_task(e) for e in events] == [None, None, None, None, 4, 4, None, None,
                                                 None, 4]
    assert scalars({"a": 1, "b": float("inf"), "c": "x" * 70_000, "d": None}) == {"a": 1,
                                                                                  "d": None}


def test_a_snapshot_waits_for_the_end_of_its_tasks_commands(tmp_path) -> None:
    from topology.temporal import Checkpoints, _Snapshots

    snapshots = _Snapshots(every=1)
    events = history()
    for e in events[:5]:  # up to the task's completion (4) and its first command (5)
        snapshots.saw(e)
    # The state as of the task started at 3: it ends with that task's commands.
    snapshots.waiting.append((3, {"total": 0}))
    assert snapshots.ready(closed=False) == []  # more commands of task 4 may follow
    for e in events[5:7]:
        snapshots.saw(e)
    assert snapshots.ready(closed=False) == [(6, {"total": 0})]  # 7 is not a command of 4
    checkpoints = Checkpoints(tmp_path / "c.json")
    checkpoints.save("w", "r", 6)
    checkpoints.save("w", "r", 4)  # never backwards
    checkpoints.save("w", "r2", 9, finished=True)
    again = Checkpoints(tmp_path / "c.json")
    assert again.position("w", "r") == 6 and again.position("w", "other") == 0
    assert again.finished == {Checkpoints.key("w", "r2")}


def test_activity_samples_become_sane_telemetry() -> None:
    import os

    from streams.temporal.telemetry import telemetry_batch

    # (wall seconds, CPU seconds, resident bytes): a 2-tick CPU jump over 5 ms at the end.
    samples = [(0.0, 0.0, 100), (0.05, 0.05, 300), (0.10, 0.075, 200), (0.105, 0.095, 900)]
    batch = telemetry_batch("w", "r", "a", "t", 1, samples, network_bytes=42)
    assert batch.timestamps_ms == [50, 100]
    assert batch.cpu_cores == pytest.approx([1.0, 0.5])
    assert batch.memory_bytes == [300, 900]  # the short tail's peak kept
    assert batch.network_bytes == [0, 42]
    short = telemetry_batch("w", "r", "a", "t", 1, [(0.0, 0.0, 1), (0.001, 0.01, 2)], 0)
    assert short.cpu_cores == [float(os.cpu_count() or 1)] and short.memory_bytes == [2]
