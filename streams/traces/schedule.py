"""When each task of a trace runs: real start times where the trace has them, otherwise list
scheduling on a bounded number of slots (a task starts once its parents have completed and a slot
is free, in trace order). The second is a reconstruction: WfFormat traces carry runtimes and the
DAG, not start times.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from streams.traces.formats import Trace, TraceTask


@dataclass(frozen=True, slots=True)
class Slot:
    """One task's place in time, in seconds from the workflow's start."""

    task: TraceTask
    start_s: float
    end_s: float
    order: int
    """The task's position among all starts (0 = first to start)."""


def schedule(trace: Trace, slots: int | None = None) -> list[Slot]:
    """The tasks in start order. ``slots``: at most this many run at once (default: the trace's
    own core count; ``0`` or ``None`` with no core count: unbounded)."""
    if trace.timed:
        ordered = sorted(trace.tasks, key=lambda t: (t.start_s, t.task_id))
        return [Slot(t, float(t.start_s or 0.0), float(t.start_s or 0.0) + t.runtime_s, i)
                for i, t in enumerate(ordered)]
    limit = slots if slots is not None else (trace.slots or 0)
    return _list_schedule(trace.tasks, limit)


def _list_schedule(tasks: tuple[TraceTask, ...], limit: int) -> list[Slot]:
    known = {t.task_id for t in tasks}
    waiting_on = {t.task_id: {p for p in t.parents if p in known} for t in tasks}
    children: dict[str, list[str]] = {t.task_id: [] for t in tasks}
    for t in tasks:
        for parent in waiting_on[t.task_id]:
            children[parent].append(t.task_id)
    rank = {t.task_id: i for i, t in enumerate(tasks)}
    by_id = {t.task_id: t for t in tasks}
    ready = [(0.0, rank[t.task_id]) for t in tasks if not waiting_on[t.task_id]]
    heapq.heapify(ready)  # (earliest start, trace rank)
    running: list[tuple[float, int]] = []  # (end, rank)
    now = 0.0
    placed: list[Slot] = []
    while ready or running:
        # Start what can start now, in trace order, while slots are free.
        startable = [item for item in ready if item[0] <= now]
        startable.sort(key=lambda item: item[1])
        for item in startable:
            if limit and len(running) >= limit:
                break
            ready.remove(item)
            task = tasks[item[1]]
            end = now + task.runtime_s
            placed.append(Slot(task, now, end, len(placed)))
            heapq.heappush(running, (end, item[1]))
        heapq.heapify(ready)
        # Advance to the next completion (or the next release of a ready task).
        if not running:
            now = min(item[0] for item in ready)
            continue
        end, index = heapq.heappop(running)
        now = max(now, end)
        for child in children[tasks[index].task_id]:
            waiting_on[child].discard(tasks[index].task_id)
            if not waiting_on[child]:
                heapq.heappush(ready, (now, rank[by_id[child].task_id]))
    return placed
