"""Shadowing Temporal: recovery by promotion against Temporal's own replay, at 1k / 10k / 50k
history events, and how fast the adapter follows a history.

For each size, the example pipeline (``examples/temporal_pipeline.py``, activities doing no
work) runs on a real dev server, shadowed by a worker and the adapter, until its history has
about that many events; its Temporal worker is then killed and a new one started, and once the
shadowflow worker has caught up (no consumer lag, nothing unstored, read from its /metrics):

- promotion: from asking the mirror's state to the resumed run's next activity scheduled (the
  server's timestamp), in three parts: the state fetched, the run started again from it
  (terminating the orphaned one), its first workflow task done (what ``promote`` does);
- replay, the reference: ``temporalio.worker.Replayer`` replaying the orphaned run's history (what
  a fresh worker does before it can schedule the next activity); median of 3 (1 at 50k);
- the adapter: a fresh adapter following the orphaned history from its start (fetch, translate,
  publish, flush), once its last event is older than ``CATCHING_UP_SECONDS`` (no state query to
  the dead worker), in events/s, against the same pages fetched and dropped (the do-nothing
  reference, in the same run).

    .venv/bin/python bench/bench_temporal.py [SIZE ...]
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Replayer

from bench._common import bench_stack
from examples.temporal_pipeline import WORKFLOW_TYPE, ShadowedPipeline, start_worker_process
from infra.temporal import dev_server
from streams.temporal.state import RESUME_KEY
from topology.settings import Settings
from topology.temporal import (
    CATCHING_UP_SECONDS,
    Adapter,
    Checkpoints,
    first_activity_scheduled,
    mirror_state,
    mirrored_state,
    poll_until,
)
from topology.temporal_demo import EVENTS_PER_STEP
from topology.worker import prepare
from topology.worker_process import WorkerProcess

SIZES = (1_000, 10_000, 50_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_size(settings: Settings, size: int, folder: Path) -> dict[str, float]:
    client = await Client.connect(settings.temporal_address)
    example = start_worker_process(settings, folder / "example.log")
    adapter = Adapter(settings, client)
    stop = asyncio.Event()
    following = asyncio.ensure_future(adapter.run(stop))
    target = max(1, (size - 8) // EVENTS_PER_STEP)
    workflow_id = f"bench-{size}-{uuid.uuid4().hex[:6]}"
    handle = await client.start_workflow(
        WORKFLOW_TYPE, {"steps": target * 2, "megabytes": 0, "rounds": 0}, id=workflow_id,
        task_queue=settings.temporal_task_queue)

    async def reached() -> bool:
        state = await asyncio.to_thread(mirrored_state, settings, workflow_id)
        return state.get("variables", {}).get("step", 0) >= target

    await poll_until(reached, 900, f"{size}: step {target} mirrored")
    example.kill()
    example.wait(10)
    history = await handle.fetch_history()
    example = start_worker_process(settings, folder / "example.log")
    await asyncio.sleep(2.0)
    # Promote once the worker has caught up (no lag, nothing unstored), as on a worker that kept
    # up: the time measured is the promotion's, not the worker's backlog of a longer run.
    await poll_until(lambda: asyncio.to_thread(_idle, settings), 600, f"{size}: worker idle")
    asked = time.time()
    # The two parts of ``promote``, timed apart: the mirror's state, then the new run started.
    state = await asyncio.to_thread(mirror_state, settings, workflow_id)
    fetched = time.time()
    started_run = await client.start_workflow(
        state["workflow_type"], {RESUME_KEY: state["variables"]}, id=workflow_id,
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
    started = time.time()
    run_id = started_run.result_run_id or ""
    resumed = client.get_workflow_handle(workflow_id, run_id=run_id)

    next_activity = await poll_until(lambda: first_activity_scheduled(resumed), 60, "next activity")
    promotion_ms = (next_activity - asked) * 1000
    parts = ((fetched - asked) * 1000, (started - fetched) * 1000,
             (next_activity - started) * 1000)
    await resumed.terminate("benchmark done")
    stop.set()
    await following
    example.kill()
    example.wait(10)
    replayer = Replayer(workflows=[ShadowedPipeline])
    replays = []
    for _ in range(1 if size >= 50_000 else 3):
        started = time.perf_counter()
        await replayer.replay_workflow(history, raise_on_replay_failure=False)
        replays.append((time.perf_counter() - started) * 1000)
    # Follow the orphaned history as history being caught up on: a fresh one would make the
    # adapter ask the dead worker for its state once (a 2 s query timeout), which fetching
    # alone, the reference, does not.
    last = history.events[-1].event_time.ToDatetime(tzinfo=UTC).timestamp()
    await asyncio.sleep(max(0.0, last + CATCHING_UP_SECONDS + 1 - time.time()))
    follow_s, fetch_s = await _adapter_rates(settings, client, workflow_id,
                                             handle.result_run_id or "", folder)
    events = len(history.events)
    return {"events": events, "promotion_ms": promotion_ms, "state_ms": parts[0],
            "start_ms": parts[1], "first_task_ms": parts[2],
            "replay_ms": statistics.median(replays),
            "adapter_events_s": events / follow_s, "fetch_events_s": events / fetch_s}


def _idle(settings: Settings) -> bool:
    """Whether the worker's metrics show no consumer lag and no unstored rows."""
    with urllib.request.urlopen(f"{settings.temporal_shadowflow_url}/metrics", timeout=10) as a:
        text = a.read().decode()
    busy = sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name in ("shadowflow_consumer_lag_messages",
                                  "shadowflow_sink_pending_rows"))
    return busy == 0


async def _adapter_rates(settings: Settings, client: Client, workflow_id: str, run_id: str,
                         folder: Path) -> tuple[float, float]:
    """Seconds a fresh adapter takes to publish the orphaned run's history, and to fetch it."""
    fresh = Adapter(settings, client, checkpoints=Checkpoints(
        folder / f"bench-{uuid.uuid4().hex[:6]}.json"))
    started = time.perf_counter()
    await fresh.follow_once(workflow_id, run_id)
    follow_s = time.perf_counter() - started
    request = GetWorkflowExecutionHistoryRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        maximum_page_size=1000)
    started = time.perf_counter()
    while True:
        response = await client.workflow_service.get_workflow_execution_history(request)
        if not response.next_page_token:
            break
        request.next_page_token = response.next_page_token
    return follow_s, time.perf_counter() - started


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or list(SIZES)
    folder = Path(tempfile.mkdtemp(prefix="shadowflow-bench-temporal-"))
    port = _free_port()
    with bench_stack(mirror_compare_wait_seconds=5.0) as base, \
            dev_server(port, folder / "server.log") as address:
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        settings = base.with_overrides(
            temporal_address=address, temporal_query=f"TaskQueue='{queue}'",
            temporal_task_queue=queue, temporal_snapshot_every=50, temporal_poll_seconds=0.5,
            temporal_checkpoint_file=folder / "checkpoints.json", web_port=_free_port())
        prepare(settings)
        worker = WorkerProcess(settings, folder / "worker.log").start(timeout=120)
        settings = settings.with_overrides(temporal_shadowflow_url=worker.settings.advertised_url)
        try:
            rows = [asyncio.run(one_size(settings, size, folder)) for size in sizes]
        finally:
            worker.stop()
    print(f"{'events':>8} {'promotion ms':>13} {'(state':>7} {'start':>6} {'task)':>6} "
          f"{'replay ms':>10} {'replay/promotion':>17} {'adapter ev/s':>13} "
          f"{'fetch only ev/s':>16}")
    for row in rows:
        print(f"{row['events']:>8} {row['promotion_ms']:>13.1f} {row['state_ms']:>7.1f} "
              f"{row['start_ms']:>6.1f} {row['first_task_ms']:>6.1f} {row['replay_ms']:>10.1f} "
              f"{row['replay_ms'] / row['promotion_ms']:>16.1f}x "
              f"{row['adapter_events_s']:>13,.0f} {row['fetch_events_s']:>16,.0f}")


if __name__ == "__main__":
    main()
