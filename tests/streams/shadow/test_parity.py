"""Live equals offline: the same runs replayed through a running worker and through
``shadowflow evaluate``'s protocol get the same memory allocation, action by action.

The worker sizes an action again when it starts and learns from each completion as soon as the
engine reports what it used, exactly what the offline protocol does; a fresh database keeps
other tests' feedback out of the worker's warm-up.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import pytest

from sinks.clickhouse import connect
from streams.forecasting.evaluation import evaluate
from streams.forecasting.forecaster import Forecaster
from streams.forecasting.sizing import DEFAULT_ALLOCATION
from streams.runtime.kafka import Publisher
from streams.traces.formats import Trace, load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import TRACES, WorkerProcess, wait_for
from topology.settings import Settings

RUNS = [TRACES / "makeflow" / "blast" / f"blast-chameleon-small-00{n}.json" for n in (1, 2, 3)]
TOLERANCE = 1e-9
"""Relative: the two sides run the same code on the same numbers."""


def _allocations(settings: Settings, workflow_id: str) -> dict[str, float]:
    rows = connect(settings).execute(
        "SELECT action_id, predicted_memory_bytes FROM feedback FINAL WHERE workflow_id = %(w)s",
        {"w": workflow_id})
    return dict(rows)


def _renamed(trace: Trace, tag: str) -> Trace:
    tasks = tuple(dataclasses.replace(task, task_type=f"{task.task_type}-{tag}")
                  for task in trace.tasks)
    return dataclasses.replace(trace, workflow_type=f"parity-{tag}", tasks=tasks)


def test_live_allocations_equal_the_offline_protocols(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    if not all(path.exists() for path in RUNS):
        pytest.skip("the shared blast traces are not beside the project")
    own = settings.with_overrides(clickhouse_database=f"sf_parity_{uuid.uuid4().hex[:8]}")
    worker_factory(clickhouse_database=own.clickhouse_database).start()
    # Workflow and action types of this test's own: the worker also reads what other tests
    # published on the shared topics, and may borrow across workflow types by action type.
    tag = uuid.uuid4().hex[:6]
    traces = [_renamed(load_wfformat(p), tag) for p in RUNS]

    offline = evaluate(traces, [Forecaster()])
    publisher = Publisher(own)
    compared = learned = 0
    for index, trace in enumerate(traces):
        # One run after another, as the offline protocol takes them.
        workflow_id = f"parity-{uuid.uuid4().hex[:6]}-{index}"
        events = history_from_trace(trace, workflow_id, f"run-{index}", 1_700_000_000_000,
                                    slots=None)
        publisher.send_history(events, per_message=50)
        publisher.flush()
        count = len(trace.tasks)
        live = wait_for(lambda w=workflow_id, n=count: (
            a := _allocations(own, w)) and len(a) == n and a,
            what=f"feedback for every action of run {index}")
        expected = {task_id: methods["shadowflow"]
                    for (run_id, task_id), methods in offline.allocations.items()
                    if run_id == f"{trace.name}#{index}"}
        assert live.keys() == expected.keys()
        mismatched = {a: (live[a], expected[a]) for a in live
                      if abs(live[a] - expected[a]) > TOLERANCE * expected[a]}
        assert not mismatched, f"run {index}: live != offline for {len(mismatched)} actions"
        compared += len(live)
        learned += sum(amount != DEFAULT_ALLOCATION["memory"] for amount in live.values())
    assert compared == sum(len(t.tasks) for t in traces)
    assert learned >= len(traces[-1].tasks), "later runs are sized from what was learned"
