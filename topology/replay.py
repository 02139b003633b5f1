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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def ticks(plan: ReplayPlan, tick_ms: int = TICK_MS) -> Iterator[list[Item]]:
    """The plan's items in publication groups: each group holds the items due within
    ``tick_ms`` of trace time from its first; a workflow's history in a group goes in one
    envelope."""
    index, total = 0, len(plan.items)
    while index < total:
        tick_end = plan.items[index].due_ms + tick_ms
        start = index
        while index < total and plan.items[index].due_ms < tick_end:
            index += 1
        yield plan.items[start:index]


def publish_plan(settings: Settings, plan: ReplayPlan, speed: float = 0.0,
                 progress: bool = True, tick_ms: int = TICK_MS) -> dict[str, int]:
    """Publish a plan; returns how many items of each kind were sent, how many messages
    (``messages``) and how many messages per topic (keyed by the topic's name)."""
    publisher = Publisher(settings)
    t0 = now_ms()
    started = time.monotonic()
    counts: dict[str, int] = defaultdict(int)
    done, total = 0, len(plan.items)
    last_report = 0.0
    for group in ticks(plan, tick_ms):
        batch = [_stamp(item, t0, speed) for item in group]
        if speed > 0:
            wait = batch[0].due_ms / speed / 1000 - (time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
        _send_tick(publisher, batch, counts)
        done += len(batch)
        if progress and (time.monotonic() - last_report > 0.2 or done == total):
            last_report = time.monotonic()
            _progress(done, total)
    publisher.flush(120)
    if progress:
        print(file=sys.stderr)
    counts["messages"] = publisher.sent
    counts.update(publisher.sent_to)
    return dict(counts)


def tick_messages(batch: list[Item]) -> list[tuple[str, list[Item]]]:
    """How one group of items is published, in order: per workflow, its history in one envelope
    (``"history"``), then each snapshot alone after the history it follows (``"state"``), then
    per workflow its telemetry in one envelope (``"telemetry"``)."""
    history: dict[str, list[Item]] = defaultdict(list)
    telemetry: dict[str, list[Item]] = defaultdict(list)
    for item in batch:
        if item.kind == "history":
            history[item.workflow_id].append(item)
        elif item.kind == "telemetry":
            telemetry[item.workflow_id].append(item)
    return ([("history", items) for items in history.values()]
            + [("state", [item]) for item in batch if item.kind == "state"]
            + [("telemetry", items) for items in telemetry.values()])


def send_message(publisher: Publisher, kind: str, items: list[Item]) -> None:
    """Publish one of ``tick_messages``' messages."""
    payloads: list[Any] = [item.payload for item in items]
    if kind == "history":
        publisher.send_history(payloads)
    elif kind == "telemetry":
        publisher.send_telemetry(payloads)
    else:
        publisher.send_state(payloads[0])


def _send_tick(publisher: Publisher, batch: list[Item], counts: dict[str, int]) -> None:
    for item in batch:
        counts[item.kind] += 1
    for kind, items in tick_messages(batch):
        send_message(publisher, kind, items)


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
