"""shadowflow shadowing a real Temporal server (a dev server the test starts): the example
pipeline's histories mirrored with no gap, a state corruption detected at its sequence, the
adapter restarted mid-history losing and duplicating nothing, and a workflow whose worker died
promoted from the mirror's state and completing.

Skipped, saying so, where the ``temporal`` extra is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("temporalio", reason="the temporal extra is not installed "
                                         "(pip install -e '.[temporal]')")

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from examples.temporal_pipeline import (
    CORRUPTION,
    WORKFLOW_TYPE,
    expected_total,
    start_worker_process,
)
from infra.temporal import dev_server
from sinks.clickhouse import connect
from streams.temporal.state import QUERY
from tests.support import WorkerProcess, call, quote_id, wait_for
from topology.settings import Settings
from topology.temporal import Adapter, Checkpoints, following, promote

PORT = 27233 + int(os.environ.get("SHADOWFLOW_TEST_PORT_OFFSET", "0"))


@pytest.fixture(scope="module")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dev_server(PORT, tmp_path_factory.mktemp("temporal") / "server.log") as address:
        yield address


@pytest.fixture
def shadowed(settings: Settings, worker_factory: Callable[..., WorkerProcess],
             temporal_address: str, tmp_path: Path) -> Iterator[Settings]:
    """A shadowflow worker (a database of its own) and a Temporal worker of the example on a
    task queue of this test's own; the settings the adapter uses."""
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    own = settings.with_overrides(
        clickhouse_database=f"sf_temporal_{uuid.uuid4().hex[:8]}",
        temporal_address=temporal_address, temporal_query=f"TaskQueue='{queue}'",
        temporal_task_queue=queue, temporal_snapshot_every=1, temporal_poll_seconds=0.2,
        temporal_checkpoint_file=tmp_path / "checkpoints.json",
        mirror_compare_wait_seconds=5.0)
    worker = worker_factory(clickhouse_database=own.clickhouse_database,
                            mirror_compare_wait_seconds=5.0).start()
    yield own.with_overrides(temporal_shadowflow_url=worker.settings.advertised_url)


class ExampleWorker:
    """The example's Temporal worker as a child process."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.process = start_worker_process(settings, log)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def mirror_of(settings: Settings, workflow_id: str) -> dict[str, Any]:
    answer = call("GET", f"{settings.temporal_shadowflow_url}/shadow/{quote_id(workflow_id)}"
                         "/state")
    return answer.body if answer.status == 200 else {}


async def until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    for _ in range(int(timeout / 0.1)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def deviations(settings: Settings, workflow_id: str) -> list[tuple[str, int, list[str]]]:
    return connect(settings).execute(
        "SELECT run_id, sequence, variables.name FROM anomalies FINAL WHERE workflow_id = "
        "%(w)s AND kind = 'STATE_DEVIATION' ORDER BY sequence", {"w": workflow_id})


def test_histories_mirrored_corruption_found_and_adapter_restarted(
        shadowed: Settings, tmp_path: Path) -> None:
    settings = shadowed
    example = ExampleWorker(settings, tmp_path / "example.log")

    async def scenario() -> tuple[int, list[Any], str]:
        client = await Client.connect(settings.temporal_address)
        workflow_id = f"pipe-{uuid.uuid4().hex[:8]}"
        first = Adapter(settings, client)
        stop = asyncio.Event()
        following = asyncio.ensure_future(first.run(stop))
        handle = await client.start_workflow(
            WORKFLOW_TYPE, {"steps": 12, "corrupt_at_step": 7, "megabytes": 16, "rounds": 30},
            id=workflow_id, task_queue=settings.temporal_task_queue)
        # The adapter stops mid-history and a new one takes over from the checkpoints.
        await until(lambda: first.published >= 40, what="the first adapter publishing")
        stop.set()
        await following
        assert not (await handle.describe()).close_time, "the run ended before the restart"
        second = Adapter(settings, client, checkpoints=Checkpoints(
            settings.temporal_checkpoint_file))
        stop = asyncio.Event()
        following = asyncio.ensure_future(second.run(stop))
        assert (await handle.result())["total"] == expected_total(12)
        history = [e async for e in handle.fetch_history_events()]
        await until(lambda: Checkpoints(settings.temporal_checkpoint_file).finished,
                    what="the run followed to its end")
        stop.set()
        await following
        assert first.published + second.published == len(history)
        return len(history), first.snapshots_published + second.snapshots_published, \
            workflow_id

    length, snapshots, workflow_id = asyncio.run(scenario())
    example.kill()
    mirror = wait_mirrored(settings, workflow_id, length)
    assert mirror["gaps"] == [] and mirror["pending"] == [] and mirror["duplicates"] == 0
    assert mirror["variables"]["total"] == expected_total(12)
    assert mirror["variables"]["wf.status"] == "COMPLETED"
    def stored() -> list[tuple[int, ...]]:
        return connect(settings).execute(
            "SELECT count(), uniqExact(sequence), min(sequence), max(sequence) FROM "
            "workflow_events WHERE workflow_id = %(w)s", {"w": workflow_id})
    wait_for(lambda: stored()[0][1] == length, what="every event stored")
    assert stored() == [(length, length, 1, length)]  # every event once, none twice
    # Snapshots before the corruption agree with the mirror; the first after it is flagged,
    # at its own sequence, naming the variable.
    for snapshot in snapshots:  # the primary's own view: true until the bug, then off
        step = snapshot.variables["step"]
        assert snapshot.variables["total"] == expected_total(step) + CORRUPTION * (step > 7)
    corrupted = [s for s in snapshots if s.variables["step"] > 7]
    found = wait_deviation(settings, workflow_id)
    assert [(sequence, names) for _, sequence, names in found] == [
        (corrupted[0].sequence, ["total"])]
    # Asked at most once per page of history: a page holds more events when the adapter is
    # behind (a loaded machine), so the count varies (9 to 12 seen for 12 steps); half is steady.
    assert len(snapshots) >= 6
    assert any(s.variables["step"] <= 7 for s in snapshots)


def wait_mirrored(settings: Settings, workflow_id: str, length: int) -> dict[str, Any]:
    async def mirrored() -> dict[str, Any]:
        return await until(lambda: (lambda m: m if m.get("sequence") == length else None)(
            mirror_of(settings, workflow_id)), what="the mirror at the history's end")
    return asyncio.run(mirrored())


def wait_deviation(settings: Settings, workflow_id: str) -> list[tuple[str, int, list[str]]]:
    async def found() -> list[tuple[str, int, list[str]]]:
        return await until(lambda: deviations(settings, workflow_id), what="the deviation")
    return asyncio.run(found())


def test_a_workflow_whose_worker_died_resumes_from_the_mirror(
        shadowed: Settings, tmp_path: Path) -> None:
    settings = shadowed
    example = ExampleWorker(settings, tmp_path / "example.log")

    async def scenario() -> tuple[str, str, dict[str, Any], dict[str, Any], list[Any]]:
        nonlocal example
        async with following(settings) as (client, _):
            return await promoted(client)

    async def promoted(client: Client) -> tuple[str, str, dict[str, Any], dict[str, Any],
                                                 list[Any]]:
        nonlocal example
        workflow_id = f"pipe-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(
            WORKFLOW_TYPE, {"steps": 10, "megabytes": 16, "rounds": 40}, id=workflow_id,
            task_queue=settings.temporal_task_queue)
        await until(lambda: mirror_of(settings, workflow_id).get("variables", {}).get(
            "step", 0) >= 4, what="four steps mirrored")
        example.kill()  # the primary's worker is gone; its execution is stuck
        run_id, state = await promote(settings, client, workflow_id)
        example = ExampleWorker(settings, tmp_path / "example.log")
        result = await client.get_workflow_handle(workflow_id, run_id=run_id).result()
        resumed = [e async for e in client.get_workflow_handle(
            workflow_id, run_id=run_id).fetch_history_events()]
        await until(lambda: mirror_of(settings, workflow_id).get("run_id") == run_id
                    and mirror_of(settings, workflow_id)["variables"].get("wf.status")
                    == "COMPLETED", what="the resumed run mirrored to its end")
        return workflow_id, run_id, state, result, resumed

    workflow_id, run_id, state, result, resumed = asyncio.run(scenario())
    example.kill()
    assert result == {"steps": 10, "total": expected_total(10)}
    promoted_step = state["variables"]["step"]
    assert promoted_step >= 4
    first_activity = next(e.activity_task_scheduled_event_attributes.activity_id
                          for e in resumed
                          if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert first_activity == f"step-{promoted_step}"  # no step done again, none skipped
    assert not [d for d in deviations(settings, workflow_id) if d[0] == run_id]


def test_a_pipeline_continued_as_new_is_followed_into_each_run(
        shadowed: Settings, tmp_path: Path) -> None:
    settings = shadowed
    example = ExampleWorker(settings, tmp_path / "example.log")

    async def scenario() -> tuple[str, dict[str, int], dict[str, Any], list[Any]]:
        async with following(settings) as (client, _):
            return await continued(client)

    async def continued(client: Client
                        ) -> tuple[str, dict[str, int], dict[str, Any], list[Any]]:
        workflow_id = f"pipe-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(
            WORKFLOW_TYPE, {"steps": 9, "continue_every": 3, "megabytes": 1, "rounds": 1},
            id=workflow_id, task_queue=settings.temporal_task_queue)
        result = await client.get_workflow_handle(workflow_id).result()  # follows the runs
        lengths = {}
        async for execution in client.list_workflows(f"WorkflowId='{workflow_id}'"):
            handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
            lengths[execution.run_id] = len((await handle.fetch_history()).events)
        await until(lambda: len(Checkpoints(settings.temporal_checkpoint_file).finished) == 3,
                    what="the three runs followed to their end")
        # What the adapter gets when its query is answered after a run's last task.
        closed = [await client.get_workflow_handle(workflow_id, run_id=run_id).query(QUERY)
                  for run_id in lengths]
        return workflow_id, lengths, result, closed

    workflow_id, lengths, result, closed = asyncio.run(scenario())
    example.kill()
    assert result == {"steps": 9, "total": expected_total(9)} and len(lengths) == 3
    assert [state["variables"]["wf.status"] for state in closed] == ["COMPLETED"] * 3

    def stored() -> dict[str, int]:
        return dict(connect(settings).execute(
            "SELECT run_id, uniqExact(sequence) FROM workflow_events WHERE workflow_id = %(w)s "
            "GROUP BY run_id", {"w": workflow_id}))
    wait_for(lambda: stored() == lengths, what="every run's events stored")
    last = wait_for(lambda: (lambda m: m if m.get("variables", {}).get("wf.status")
                             == "COMPLETED" and m["run_id"] in lengths
                             and m["variables"].get("step") == 9 else None)(
        mirror_of(settings, workflow_id)), what="the last run mirrored to its end")
    assert last["variables"]["total"] == expected_total(9) and last["gaps"] == []
    assert deviations(settings, workflow_id) == []  # each run's state carried, none disagreeing
