"""Turning a trace into the history a live engine would have published for it.

Tasks start as soon as their parents complete (no slot limit) and run for their measured
runtime; this schedule is a reconstruction, since traces carry no per-task start times.
"""

from __future__ import annotations

from schemas.records import EventKind, HistoryEvent
from streams.traces import Trace


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
