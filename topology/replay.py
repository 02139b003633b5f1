"""``shadowflow replay PATH...``: publish what live engines would have, from real traces.

The plan (``streams.replay.plan_replay``) says what to publish and when, in trace time; here it is
paced (``--speed``: trace seconds per wall second; 0 publishes as fast as the broker takes it),
stamped with wall-clock times (trace offsets divided by the speed, from the replay's start) and
published in envelopes: per tick, each workflow's history events go in one message and its
telemetry batches in another.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from schemas.records import HistoryEvent, StateSnapshot, TelemetryBatch
from streams.runtime.clock import now_ms
from streams.runtime.kafka import Publisher
from streams.traces.formats import load_trace
from streams.traces.playback import Item, ReplayPlan, plan_replay
from topology.evaluate import trace_files
from topology.settings import Settings
from topology.topics import ensure_topics

TICK_MS = 50


def _stamp(item: Item, t0: int, speed: float) -> Item:
    def at(offset: int) -> int:
        return t0 + round(offset / speed if speed > 0 else offset)

    payload = item.payload
    if isinstance(payload, HistoryEvent | StateSnapshot):
        payload = dataclasses.replace(payload, timestamp_ms=at(payload.timestamp_ms))
    elif isinstance(payload, TelemetryBatch):
        payload = dataclasses.replace(payload,
                                      timestamps_ms=[at(t) for t in payload.timestamps_ms])
    return dataclasses.replace(item, payload=payload)


def publish_plan(settings: Settings, plan: ReplayPlan, speed: float = 0.0,
                 progress: bool = True) -> dict[str, int]:
    """Publish a plan; returns how many items of each kind and messages were sent."""
    publisher = Publisher(settings)
    t0 = now_ms()
    started = time.monotonic()
    counts: dict[str, int] = defaultdict(int)
    index, total = 0, len(plan.items)
    last_report = 0.0
    while index < total:
        tick_end = plan.items[index].due_ms + TICK_MS
        batch = []
        while index < total and plan.items[index].due_ms < tick_end:
            batch.append(_stamp(plan.items[index], t0, speed))
            index += 1
        if speed > 0:
            wait = batch[0].due_ms / speed / 1000 - (time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
        _send_tick(publisher, batch, counts)
        if progress and (time.monotonic() - last_report > 0.2 or index == total):
            last_report = time.monotonic()
            _progress(index, total)
    publisher.flush(120)
    if progress:
        print(file=sys.stderr)
    counts["messages"] = publisher.sent
    return dict(counts)


def _send_tick(publisher: Publisher, batch: list[Item], counts: dict[str, int]) -> None:
    history: dict[str, list[HistoryEvent]] = defaultdict(list)
    telemetry: dict[str, list[TelemetryBatch]] = defaultdict(list)
    for item in batch:
        counts[item.kind] += 1
        if item.kind == "history":
            history[item.workflow_id].append(item.payload)  # type: ignore[arg-type]
        elif item.kind == "telemetry":
            telemetry[item.workflow_id].append(item.payload)  # type: ignore[arg-type]
    for workflow_id in history:
        publisher.send_history(history[workflow_id])
    for item in batch:  # snapshots after the history they follow
        if item.kind == "state":
            publisher.send_state(item.payload)  # type: ignore[arg-type]
    for workflow_id in telemetry:
        publisher.send_telemetry(telemetry[workflow_id])


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    print(f"\rreplay [{'#' * filled}{' ' * (width - filled)}] {done}/{total} items",
          end="", file=sys.stderr, flush=True)


def run_replay(settings: Settings, paths: list[str], *, speed: float, workflows: int,
               seed: int, slots: int | None, faults_per_workflow: int, duplicates: int,
               reorder: int, snapshot_every: int, faults_out: str | None) -> int:
    """The ``replay`` command; returns the exit code."""
    files = trace_files(paths)
    if not files:
        print("shadowflow replay: no trace files found", file=sys.stderr)
        return 2
    traces = [load_trace(p) for p in files]
    plan = plan_replay(traces, workflows or len(traces), seed=seed, slots=slots,
                       faults_per_workflow=faults_per_workflow,
                       duplicates_per_workflow=duplicates, reorder_distance=reorder,
                       snapshot_every=snapshot_every)
    if faults_out:
        Path(faults_out).write_text("".join(json.dumps(f.to_json()) + "\n"
                                            for f in plan.faults))
    ensure_topics(settings)
    started = time.monotonic()
    counts = publish_plan(settings, plan, speed)
    elapsed = time.monotonic() - started
    print(f"replayed {plan.workflows} workflows of {len(traces)} traces: "
          f"{counts.get('history', 0)} history events, {counts.get('telemetry', 0)} telemetry "
          f"batches, {counts.get('state', 0)} snapshots in {counts['messages']} messages, "
          f"{elapsed:.1f}s; {len(plan.faults)} faults injected"
          + (f" (written to {faults_out})" if faults_out else ""))
    return 0
