"""Turning a trace into what a live engine would have published for it: history and telemetry.

Tasks start as ``traces.schedule`` places them: once their parents complete and a slot is free,
or at their real start where the trace has one; this schedule is a reconstruction for WfFormat
traces, which carry no per-task start times.
Telemetry samples are synthesized around the real per-task aggregates: the memory samples rise
to the task's real peak, CPU stays at its real average, and the bytes read and written are
spread over the samples. Cost is priced at ``COST_PER_CORE_HOUR``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.records import EventKind, HistoryEvent, Resources, StateSnapshot, TelemetryBatch
from streams.mirror.definitions import DEFAULT
from streams.traces.faulty_primary import FAULT_KINDS, Fault, FaultPlan, simulate
from streams.traces.formats import Trace, TraceTask
from streams.traces.schedule import Slot, schedule

COST_PER_CORE_HOUR = 0.05


def history_from_trace(trace: Trace, workflow_id: str, run_id: str, start_ms: int,
                       slots: int | None = 0, report_usage: bool = True) -> list[HistoryEvent]:
    """The run's history on the schedule of ``traces.schedule`` (``slots``: at most that many
    actions at once; ``0``: unbounded; ``None``: the trace's own core count; real start times
    where the trace has them): started, then each action scheduled/started/completed, then
    completed; sequence numbers from 1 in time order. At one instant, completions come before
    starts, as in the offline evaluation. An action is scheduled with its input size and, where
    the trace has one, its memory request (``declared``); with ``report_usage`` its completion
    carries what it used (``usage.*`` attributes), as engines that measure it report."""
    timed: list[tuple[int, int, int, EventKind, Slot]] = []
    for slot in schedule(trace, slots):
        begin = start_ms + round(slot.start_s * 1000)
        end = start_ms + round(slot.end_s * 1000)
        timed.append((begin, 1, slot.order * 3, EventKind.ACTION_SCHEDULED, slot))
        timed.append((begin, 1, slot.order * 3 + 1, EventKind.ACTION_STARTED, slot))
        # A zero-length action completes right after it starts; any other before what starts
        # at the instant it ends.
        timed.append((end, 0, slot.order, EventKind.ACTION_COMPLETED, slot) if end > begin
                     else (end, 1, slot.order * 3 + 2, EventKind.ACTION_COMPLETED, slot))
    timed.sort(key=lambda item: item[:3])
    events = [HistoryEvent(workflow_id, run_id, trace.workflow_type, 1,
                           EventKind.WORKFLOW_STARTED, start_ms)]
    for at, _, _, kind, slot in timed:
        task = slot.task
        attributes = {"input_bytes": float(task.input_bytes)}
        declared = None
        if kind is EventKind.ACTION_SCHEDULED and task.requested_memory_bytes:
            declared = Resources(memory_bytes=task.requested_memory_bytes)
        if kind is EventKind.ACTION_COMPLETED and report_usage:
            attributes.update(_usage_attributes(task))
        events.append(HistoryEvent(
            workflow_id, run_id, trace.workflow_type, len(events) + 1, kind, at,
            action_id=task.task_id, action_type=task.task_type, attributes=attributes,
            declared=declared,
        ))
    end = max((at for at, *_ in timed), default=start_ms)
    events.append(HistoryEvent(workflow_id, run_id, trace.workflow_type, len(events) + 1,
                               EventKind.WORKFLOW_COMPLETED, end))
    return events


def _usage_attributes(task: TraceTask) -> dict[str, float]:
    usage = {"usage.network_bytes": float((task.read_bytes or 0) + (task.written_bytes or 0)),
             "usage.cost": _cost(task)}
    if task.memory_bytes is not None:
        usage["usage.memory_bytes"] = float(task.memory_bytes)
    if task.cpu_cores is not None:
        usage["usage.cpu_cores"] = float(task.cpu_cores)
    return usage


def _cost(task: TraceTask) -> float:
    return (task.cpu_cores or 0.0) * max(0.0, task.runtime_s) / 3600.0 * COST_PER_CORE_HOUR


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
        cost = _cost(task)
        batches.append(TelemetryBatch(
            event.workflow_id, event.run_id, event.action_id, event.action_type, event.attempt,
            stamps, [cpu] * samples, [peak * (i + 1) // samples for i in range(samples)],
            [moved // samples] * samples, [cost / samples] * samples))
    return batches


@dataclass(frozen=True, slots=True)
class Item:
    """Something to publish at ``due_ms`` of trace time after the replay's start."""

    due_ms: int
    workflow_id: str
    kind: str  # "history", "state" or "telemetry"
    payload: HistoryEvent | StateSnapshot | TelemetryBatch


@dataclass
class ReplayPlan:
    """Everything a replay publishes, in publication order, and the faults it injects."""

    items: list[Item] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    workflows: int = 0


def plan_replay(traces: Sequence[Trace], workflows: int, *, seed: int = 0,
                slots: int | None = 0, faults_per_workflow: int = 0,
                duplicates_per_workflow: int = 0, reorder_distance: int = 0,
                snapshot_every: int = 10, stagger_ms: int = 5_000,
                prefix: str = "replay") -> ReplayPlan:
    """``workflows`` runs of the traces (cycled), interleaved: each starts at a random offset
    within ``stagger_ms`` and publishes its history, telemetry at each action's end and the
    primary's snapshots every ``snapshot_every`` events, with ``faults_per_workflow`` random
    faults. The same arguments always give the same plan."""
    rng = random.Random(seed)
    plan = ReplayPlan(workflows=workflows)
    order = 0
    keyed: list[tuple[int, int, Item]] = []
    for i in range(workflows):
        trace = traces[i % len(traces)]
        workflow_id = f"{prefix}-{seed}-{i:04d}-{trace.name}"
        start = rng.randrange(stagger_ms + 1)
        events = history_from_trace(trace, workflow_id, "run-1", start, slots)
        kinds = rng.sample(FAULT_KINDS, min(faults_per_workflow, len(FAULT_KINDS)))
        run = simulate(events, DEFAULT, FaultPlan(kinds, duplicates_per_workflow,
                                                  reorder_distance),
                       snapshot_every=snapshot_every, seed=rng.randrange(2**31))
        plan.faults += run.faults
        due = start
        snapshots = {s.sequence: s for s in run.snapshots}
        for event in run.history:  # noisy order kept: due times never go back
            due = max(due, event.timestamp_ms)
            keyed.append((due, order, Item(due, workflow_id, "history", event)))
            order += 1
        for event in events:  # snapshots after the event they follow, as the primary sends
            if event.sequence in snapshots:
                keyed.append((event.timestamp_ms, order,
                              Item(event.timestamp_ms, workflow_id, "state",
                                   snapshots[event.sequence])))
                order += 1
        for batch in telemetry_from_trace(trace, events):
            due = batch.timestamps_ms[-1] if batch.timestamps_ms else start
            keyed.append((due, order, Item(due, workflow_id, "telemetry", batch)))
            order += 1
    plan.items = [item for _, _, item in sorted(keyed, key=lambda k: (k[0], k[1]))]
    return plan
