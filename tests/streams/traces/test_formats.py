"""Reading the shared traces and the history generated from them."""

from __future__ import annotations

from itertools import pairwise

import pytest

from schemas.records import EventKind
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import TRACES

FILES = sorted(TRACES.glob("*/*/*.json")) + sorted(TRACES.glob("nextflow/*.json"))
pytestmark = pytest.mark.skipif(not FILES, reason=f"shared traces not found at {TRACES}")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_trace_history_is_consistent(path) -> None:
    trace = load_wfformat(path)
    position = {t.task_id: i for i, t in enumerate(trace.tasks)}
    assert all(position[p] < position[t.task_id] for t in trace.tasks for p in t.parents)
    events = history_from_trace(trace, "wf", "run", 1_000)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].kind is EventKind.WORKFLOW_STARTED
    assert events[-1].kind is EventKind.WORKFLOW_COMPLETED
    assert all(a.timestamp_ms <= b.timestamp_ms for a, b in pairwise(events))
    started = {e.action_id: e.timestamp_ms for e in events if e.kind is EventKind.ACTION_STARTED}
    done = {e.action_id: e.timestamp_ms for e in events if e.kind is EventKind.ACTION_COMPLETED}
    assert len(started) == len(done) == len(trace.tasks)
    for task in trace.tasks:
        assert all(done[p] <= started[task.task_id] for p in task.parents)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_history_on_the_traces_own_cores_respects_slots_and_dependencies(path) -> None:
    trace = load_wfformat(path)
    events = history_from_trace(trace, "wf", "run", 0, slots=None)
    started = {e.action_id: e.timestamp_ms for e in events if e.kind is EventKind.ACTION_STARTED}
    done = {e.action_id: e.timestamp_ms for e in events if e.kind is EventKind.ACTION_COMPLETED}
    assert len(started) == len(done) == len(trace.tasks)
    for task in trace.tasks:
        assert all(done[p] <= started[task.task_id] for p in task.parents)
    running = 0
    for event in events:  # completions come before starts at the same instant
        running += {EventKind.ACTION_STARTED: 1, EventKind.ACTION_COMPLETED: -1}.get(event.kind, 0)
        assert running <= (trace.slots or len(trace.tasks))
