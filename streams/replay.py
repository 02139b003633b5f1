"""Turning a trace into what a live engine would have published for it: history and telemetry.

Tasks start as soon as their parents complete (no slot limit) and run for their measured
runtime; this schedule is a reconstruction, since traces carry no per-task start times.
Telemetry samples are synthesized around the real per-task aggregates: the memory samples rise
to the task's real peak, CPU stays at its real average, and the bytes read and written are
spread over the samples. Cost is priced at ``COST_PER_CORE_HOUR``.
"""

from __future__ import annotations

from schemas.records import EventKind, HistoryEvent, TelemetryBatch
from streams.traces import Trace

COST_PER_CORE_HOUR = 0.05


def history_from_trace(trace: Trace, workflow_id: str, run_id: str,
                       start_ms: int) -> list[HistoryEvent]:
    """The run's history: started, then each action scheduled/started/completed, then
    completed; sequence numbers from 1 in time order."""
    finish_ms: dict[str, int] = {}
    timed: list[tuple[int, int, EventKind, str, str, int]] = []
    for order, task in enumerate(trace.tasks):
        begin = max((finish_ms[p] for p in task.parents if p in finish_ms), default=start_ms)
        end = begin + round(task.runtime_s * 1000)
        finish_ms[task.task_id] = end
        timed.append((begin, order * 3, EventKind.ACTION_SCHEDULED, task.task_id,
                      task.task_type, order))
        timed.append((begin, order * 3 + 1, EventKind.ACTION_STARTED, task.task_id,
                      task.task_type, order))
        timed.append((end, order * 3 + 2, EventKind.ACTION_COMPLETED, task.task_id,
                      task.task_type, order))
    timed.sort()
    tasks = trace.tasks
    events = [HistoryEvent(workflow_id, run_id, trace.workflow_type, 1,
                           EventKind.WORKFLOW_STARTED, start_ms)]
    for at, _, kind, action_id, action_type, order in timed:
        task = tasks[order]
        events.append(HistoryEvent(
            workflow_id, run_id, trace.workflow_type, len(events) + 1, kind, at,
            action_id=action_id, action_type=action_type,
            attributes={"input_bytes": float(task.input_bytes)},
        ))
    end = max(finish_ms.values(), default=start_ms)
    events.append(HistoryEvent(workflow_id, run_id, trace.workflow_type, len(events) + 1,
                               EventKind.WORKFLOW_COMPLETED, end))
    return events


def telemetry_from_trace(trace: Trace, events: list[HistoryEvent],
                         samples: int = 4) -> list[TelemetryBatch]:
    """One batch of ``samples`` samples per completed action of ``events`` (the history made
    by ``history_from_trace``), shaped around the real aggregates."""
    tasks = {t.task_id: t for t in trace.tasks}
    started = {e.action_id: e.timestamp_ms for e in events if e.kind is EventKind.ACTION_STARTED}
    batches = []
    for event in events:
        if event.kind is not EventKind.ACTION_COMPLETED or event.action_id not in tasks:
            continue
        task = tasks[event.action_id]
        begin, end = started.get(event.action_id, event.timestamp_ms), event.timestamp_ms
        stamps = [begin + (end - begin) * (i + 1) // samples for i in range(samples)]
        peak = task.memory_bytes or 0
        cpu = task.cpu_cores or 0.0
        moved = (task.read_bytes or 0) + (task.written_bytes or 0)
        cost = cpu * max(0.0, task.runtime_s) / 3600.0 * COST_PER_CORE_HOUR
        batches.append(TelemetryBatch(
            event.workflow_id, event.run_id, event.action_id, event.action_type, event.attempt,
            stamps, [cpu] * samples, [peak * (i + 1) // samples for i in range(samples)],
            [moved // samples] * samples, [cost / samples] * samples))
    return batches
