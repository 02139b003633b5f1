"""``shadowflow temporal demo``: shadowing a real Temporal workflow end to end.

Brings up the local stack, a Temporal dev server, a shadowflow worker (on a database of its own),
the example pipeline's Temporal worker (``examples/temporal_pipeline.py``) and the adapter. It runs
one pipeline of about ``--events`` history events whose code corrupts its ``total`` a third of the
way through (as a non-deterministic bug would), shows the anomaly the mirror raised, kills the
Temporal worker two thirds of the way through, starts a new one and promotes the workflow from the
mirror's state, then measures:

- ``promotion_ms``: from the promotion request to the resumed run's next activity scheduled
  (the mirror's state fetched, the new run started, its first workflow task done);
- ``replay_ms``: a fresh worker rebuilding the same state the way Temporal recovers, by replaying
  the failed run's whole history (``temporalio.worker.Replayer``, median of three).
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from examples.temporal_pipeline import (
    WORKFLOW_TYPE,
    ShadowedPipeline,
    expected_total,
    start_worker_process,
)
from infra.stack import LocalStack
from infra.temporal import dev_server
from sinks.clickhouse import connect
from topology.demo import fresh_database
from topology.settings import Settings
from topology.temporal import (
    Adapter,
    first_activity_scheduled,
    mirrored_state,
    poll_until,
    promote,
)
from topology.worker import prepare
from topology.worker_process import WorkerProcess

EVENTS_PER_STEP = 8
"""History events one pipeline step adds: a workflow task (3), two memos, the activity (3)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_temporal_demo(settings: Settings, events: int = 1000, json_path: str | None = None,
                      keep: bool = False) -> int:
    """Run the demo (see the module docstring); returns the exit code."""
    stack = LocalStack(settings)
    already = {s.name for s in stack.status() if s.pid is not None}
    stack.up()
    token = uuid.uuid4().hex[:8]
    settings = fresh_database(settings, "_temporal_demo")
    port = _free_port()
    queue = f"shadowflow-demo-{token}"
    settings = settings.with_overrides(
        temporal_address=f"127.0.0.1:{port}", temporal_query=f"TaskQueue='{queue}'",
        temporal_task_queue=queue, temporal_snapshot_every=1, temporal_poll_seconds=0.2,
        temporal_checkpoint_file=settings.stack_dir / f"temporal-demo-{token}.json",
        mirror_compare_wait_seconds=5.0)
    worker = WorkerProcess(settings, settings.stack_dir / "temporal-demo-worker.log")
    examples: list[Any] = []
    try:
        with dev_server(port, settings.stack_dir / "temporal-dev-server.log"):
            prepare(settings)
            print(f"stack and Temporal dev server (127.0.0.1:{port}) up; starting a shadowflow "
                  f"worker (log: {worker.log_path})")
            worker.start(timeout=120)
            settings = settings.with_overrides(temporal_shadowflow_url=worker.settings
                                               .advertised_url)
            log_path = settings.stack_dir / "temporal-demo-example.log"
            examples.append(start_worker_process(settings, log_path))
            result = asyncio.run(_scenario(settings, events, examples, log_path))
    finally:
        for example in examples:
            example.kill()
            example.wait(10)
        worker.stop()
        if not keep:
            for name in ("broker", "clickhouse"):
                if name not in already:
                    stack.down(only=name)
    _show(result)
    if json_path:
        with open(json_path, "w") as out:
            json.dump(result, out, indent=1)
        print(f"figures written to {json_path}")
    return 0 if result["completed"] else 1


async def _scenario(settings: Settings, events: int, examples: list[Any],
                    log_path: Any) -> dict[str, Any]:
    client = await Client.connect(settings.temporal_address)
    adapter = Adapter(settings, client)
    stop = asyncio.Event()
    following = asyncio.ensure_future(adapter.run(stop))
    steps = max(6, (events - 8) // EVENTS_PER_STEP)
    corrupt_at, kill_at = steps // 3, (2 * steps) // 3
    workflow_id = f"pipeline-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        WORKFLOW_TYPE, {"steps": steps, "corrupt_at_step": corrupt_at, "megabytes": 8,
                        "rounds": 2}, id=workflow_id, task_queue=settings.temporal_task_queue)
    print(f"started {workflow_id}: {steps} steps (~{steps * EVENTS_PER_STEP + 8} history "
          f"events), its code corrupts `total` from step {corrupt_at}")
    db = connect(settings)

    async def mirrored_step() -> bool:
        state = await asyncio.to_thread(mirrored_state, settings, workflow_id)
        return state.get("variables", {}).get("step", 0) >= kill_at

    await poll_until(mirrored_step, 300, f"step {kill_at} mirrored")
    examples[0].kill()
    examples[0].wait(10)
    print(f"killed the Temporal worker at step {kill_at}: the run is orphaned")
    history = await handle.fetch_history()
    examples.append(start_worker_process(settings, log_path))
    await asyncio.sleep(2.0)  # the new worker polls its task queue (both recovery paths need it)
    asked = time.time()
    run_id, state = await promote(settings, client, workflow_id)
    resumed = client.get_workflow_handle(workflow_id, run_id=run_id)

    scheduled_at = await poll_until(lambda: first_activity_scheduled(resumed), 60,
                                "the resumed run's next activity")
    promotion_ms = (scheduled_at - asked) * 1000
    replay_ms = await _replay_ms(history)
    outcome = await resumed.result()
    await poll_until(lambda: _resumed_mirrored(settings, workflow_id, run_id), 60,
                 "the resumed run mirrored to its end")
    stop.set()
    await following
    await asyncio.sleep(2.0)  # the last feedback and alerts reach ClickHouse
    where = {"w": workflow_id}
    anomalies = db.execute(
        "SELECT run_id, kind, severity, sequence, variables.name FROM anomalies FINAL "
        "WHERE workflow_id = %(w)s AND kind IN ('STATE_DEVIATION', 'MISSING_EVENTS') "
        "ORDER BY detected_ms", where)
    alerts = dict(db.execute("SELECT kind, count() FROM anomalies FINAL WHERE workflow_id = "
                             "%(w)s AND kind NOT IN ('STATE_DEVIATION', 'MISSING_EVENTS') "
                             "GROUP BY kind", where))
    forecasts = dict(db.execute("SELECT source, count() FROM predictions FINAL WHERE "
                                "workflow_id = %(w)s AND predicted_next = 0 GROUP BY source",
                                where))
    reservations = dict(db.execute("SELECT op, count() FROM reservations FINAL WHERE "
                                   "workflow_id = %(w)s GROUP BY op", where))
    usage = db.execute("SELECT count(), max(memory_peak), max(cpu_peak) FROM action_usage FINAL "
                       "WHERE workflow_id = %(w)s", where)[0]
    return {
        "workflow_id": workflow_id, "steps": steps, "corrupt_at_step": corrupt_at,
        "killed_at_step": kill_at, "resumed_from_step": state["variables"].get("step"),
        "history_events": len(history.events), "events_mirrored": adapter.published,
        "snapshots": len(adapter.snapshots_published),
        "anomalies": [{"run_id": r, "kind": k, "severity": s, "sequence": q, "variables": v}
                      for r, k, s, q, v in anomalies],
        "shadow_alerts": alerts, "forecasts_by_source": forecasts,
        "reservations_by_op": reservations, "telemetry_windows": usage[0],
        "activity_peak_memory_bytes": usage[1], "activity_peak_cpu_cores": usage[2],
        "promotion_ms": round(promotion_ms, 1), "replay_ms": round(replay_ms, 1),
        "result": outcome,
        "completed": outcome.get("total") == expected_total(steps)}


async def _resumed_mirrored(settings: Settings, workflow_id: str, run_id: str) -> bool:
    state = await asyncio.to_thread(mirrored_state, settings, workflow_id)
    return (state.get("run_id") == run_id
            and state.get("variables", {}).get("wf.status") == "COMPLETED")


async def _replay_ms(history: WorkflowHistory, rounds: int = 3) -> float:
    replayer = Replayer(workflows=[ShadowedPipeline])
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await replayer.replay_workflow(history, raise_on_replay_failure=False)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _show(result: dict[str, Any]) -> None:
    print(f"\nhistory of the failed run: {result['history_events']} events; mirrored "
          f"{result['events_mirrored']} events of both runs, {result['snapshots']} primary "
          f"snapshots compared, {result['telemetry_windows']} telemetry windows stored")
    print(f"injected: `total` corrupted in the workflow's memory from step "
          f"{result['corrupt_at_step']}; anomalies the mirror raised (run, kind, severity, "
          "sequence, variables):")
    for a in result["anomalies"]:
        print(f"  {a['run_id'][:8]}  {a['kind']} {a['severity']} @{a['sequence']} "
              f"{', '.join(a['variables'])}")
    print(f"shadow: forecasts by source {result['forecasts_by_source']}, reservation commands "
          f"{result['reservations_by_op']}, alerts {result['shadow_alerts']}; activities "
          f"measured by the interceptor peaked at "
          f"{result['activity_peak_memory_bytes'] / 2**20:.0f} MiB and "
          f"{result['activity_peak_cpu_cores']:.2f} cores")
    print(f"promoted from the mirror's state at step {result['resumed_from_step']}: the resumed "
          f"run completed with {result['result']}")
    ratio = result["replay_ms"] / result["promotion_ms"] if result["promotion_ms"] else 0.0
    print(f"recovery: promotion {result['promotion_ms']:.1f} ms to the next activity; a fresh "
          f"worker's replay of the {result['history_events']}-event history "
          f"{result['replay_ms']:.1f} ms ({ratio:.1f}x)")
