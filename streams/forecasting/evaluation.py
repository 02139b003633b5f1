"""Offline evaluation of sizing methods on real traces (``shadowflow evaluate``).

Runs are taken one after another (``order_runs``: by name, by size, or shuffled); within a run,
tasks start on the trace's schedule (``traces.schedule``). Each task is sized when it starts, by
every method, from what is known at that moment and nothing else (``sizing_context``: its type,
run, input file sizes and request, never its own peak, runtime or what it read while running) and
what completed before (completions at the same instant count as before). Memory:

- a task whose peak exceeds its allocation fails and is retried at double the allocation until it
  fits; every failed attempt wastes its allocation for the task's runtime;
- wastage (GB·h) = (allocation - peak) x runtime of the successful attempt + the failed attempts;
- under-provisioned share = tasks whose first allocation was below their peak / tasks;
- memory allocation quality (MAQ) = usage / (usage + wastage), usage = peak x runtime.

CPU is not retried (too little CPU slows a task, it does not kill it): CPU slack = unused share of
the allocated core-hours, and the share of tasks given fewer cores than they used on average.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from streams.forecasting.sizing import MINIMUM_ALLOCATION, SizingMethod, TaskContext
from streams.traces.formats import Trace
from streams.traces.schedule import Slot, schedule

GB = 1e9
HOUR = 3600.0


@dataclass
class Outcome:
    """One method's results over a set of tasks."""

    tasks: int = 0
    underprovisioned: int = 0
    usage_gbh: float = 0.0
    wastage_gbh: float = 0.0
    failed_attempts: int = 0
    cpu_allocated_core_h: float = 0.0
    cpu_unused_core_h: float = 0.0
    cpu_short_tasks: int = 0
    calibration: dict[float, list[int]] = field(default_factory=dict)
    """Confidence bucket (lower edge, tenths) -> [tasks, tasks whose memory allocation covered
    the peak], for methods that state a confidence."""

    @property
    def underprovisioned_share(self) -> float:
        """Share of tasks under-provisioned at their first attempt."""
        return self.underprovisioned / self.tasks if self.tasks else 0.0

    @property
    def maq(self) -> float:
        """Memory allocation quality: usage / (usage + wastage)."""
        total = self.usage_gbh + self.wastage_gbh
        return self.usage_gbh / total if total else 1.0

    @property
    def cpu_slack(self) -> float:
        """Unused share of the allocated core-hours."""
        return (self.cpu_unused_core_h / self.cpu_allocated_core_h
                if self.cpu_allocated_core_h else 0.0)

    def add_memory(self, allocation: float, peak: float, runtime_s: float) -> None:
        """Count one task of ``peak`` run with ``allocation`` first (``memory_outcome``)."""
        wasted, failures = memory_outcome(allocation, peak, runtime_s)
        self.tasks += 1
        self.underprovisioned += allocation < peak
        self.wastage_gbh += wasted
        self.failed_attempts += failures
        self.usage_gbh += peak * runtime_s / HOUR / GB

    def add(self, other: Outcome) -> None:
        """Accumulate ``other`` into this outcome."""
        for name in ("tasks", "underprovisioned", "usage_gbh", "wastage_gbh", "failed_attempts",
                     "cpu_allocated_core_h", "cpu_unused_core_h", "cpu_short_tasks"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for bucket, (n, covered) in other.calibration.items():
            mine = self.calibration.setdefault(bucket, [0, 0])
            mine[0] += n
            mine[1] += covered

    def to_json(self) -> dict[str, float | int]:
        """The figures the ``--json`` report holds for a method."""
        return {"wastage_gbh": round(self.wastage_gbh, 6),
                "underprovisioned_share": round(self.underprovisioned_share, 6),
                "maq": round(self.maq, 6), "tasks": self.tasks,
                "usage_gbh": round(self.usage_gbh, 6), "failed_attempts": self.failed_attempts,
                "cpu_slack": round(self.cpu_slack, 6),
                "cpu_short_share": round(self.cpu_short_tasks / self.tasks, 6)
                if self.tasks else 0.0,
                "calibration": {f"{b:.1f}": {"tasks": n, "covered_share": round(c / n, 6)}
                                for b, (n, c) in sorted(self.calibration.items())}}


def memory_outcome(allocation: float, peak: float, runtime_s: float) -> tuple[float, int]:
    """(wastage in GB·h, failed attempts) of running a task of ``peak`` with ``allocation``,
    retried at double the allocation until it fits."""
    if allocation <= 0:
        raise ValueError(f"allocation must be positive, got {allocation}")
    hours = runtime_s / HOUR
    wasted, failures = 0.0, 0
    while allocation < peak:
        wasted += allocation * hours
        failures += 1
        allocation *= 2
    return (wasted + (allocation - peak) * hours) / GB, failures


@dataclass
class Evaluation:
    """Per trace file and overall, per method."""

    methods: list[str]
    per_file: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    overall: dict[str, Outcome] = field(default_factory=dict)
    allocations: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    """(run id, task id) -> method -> the task's first memory allocation."""

    def to_json(self) -> dict[str, object]:
        """``{"files": {path: {method: figures}}, "overall": {method: figures}}``."""
        return {"files": {path: {m: o.to_json() for m, o in outcomes.items()}
                          for path, outcomes in self.per_file.items()},
                "overall": {m: o.to_json() for m, o in self.overall.items()}}


ORDERS = ("name", "size", "random")


def order_runs(traces: Sequence[Trace], order: str = "name", seed: int = 0) -> list[Trace]:
    """The runs in the order they are evaluated: ``name`` (by file name), ``size`` (fewest tasks
    first, then least input), or ``random`` (the name order shuffled with ``seed``)."""
    by_name = sorted(traces, key=lambda t: (t.name, str(t.path)))
    if order == "name":
        return by_name
    if order == "size":
        return sorted(by_name, key=lambda t: (len(t.tasks), sum(x.input_bytes for x in t.tasks)))
    if order == "random":
        random.Random(seed).shuffle(by_name)
        return by_name
    raise ValueError(f"unknown run order {order!r} (one of {', '.join(ORDERS)})")


def sizing_context(trace: Trace, slot: Slot, run_id: str, now_s: float) -> TaskContext:
    """What is known of a task when it is sized: its workflow and action type, run, position,
    input file sizes and request. Never its peak, runtime or what it read while running."""
    task = slot.task
    return TaskContext(trace.workflow_type, run_id, task.task_type, 1, float(task.input_bytes),
                       slot.order, task.requested_memory_bytes, now_s)


def evaluate(traces: Sequence[Trace], methods: Sequence[SizingMethod],
             slots: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Run every method over the traces, in order; see the module docstring."""
    result = Evaluation([m.name for m in methods])
    result.overall = {m.name: Outcome() for m in methods}
    clock = 0.0  # runs back to back on one clock, for methods that forget with time
    for index, trace in enumerate(traces):
        run_id = f"{trace.name}#{index}"
        placed = schedule(trace, slots)
        outcomes = {m.name: Outcome() for m in methods}
        _run(trace, run_id, placed, methods, outcomes, clock, result.allocations)
        clock += max((s.end_s for s in placed), default=0.0)
        result.per_file[str(trace.path)] = outcomes
        for name, outcome in outcomes.items():
            result.overall[name].add(outcome)
        if progress:
            progress(index + 1, len(traces))
    return result


def _run(trace: Trace, run_id: str, placed: list[Slot], methods: Sequence[SizingMethod],
         outcomes: dict[str, Outcome], clock: float,
         allocations: dict[tuple[str, str], dict[str, float]]) -> None:
    # Completions at an instant come before starts at it (a child may use its parent's result),
    # but a zero-length task completes right after it starts (as ``traces.playback`` publishes).
    events = sorted([(s.start_s, 1, 2 * s.order, True, s.order) for s in placed] +
                    [(s.end_s, 0, s.order, False, s.order) if s.end_s > s.start_s
                     else (s.end_s, 1, 2 * s.order + 1, False, s.order) for s in placed])
    by_order = {s.order: s for s in placed}
    given: dict[tuple[str, int], tuple[float, float]] = {}
    stated: dict[tuple[str, int], float] = {}
    contexts: dict[int, TaskContext] = {}
    for at, _, _, is_start, order in events:
        task = by_order[order].task
        if is_start:
            context = contexts[order] = sizing_context(trace, by_order[order], run_id, clock + at)
            first = allocations.setdefault((run_id, task.task_id), {})
            for method in methods:
                forecast = getattr(method, "forecast", None)
                if forecast is not None:  # a method that states its confidence
                    memory = forecast(context, "memory")
                    stated[(method.name, order)] = memory.confidence
                    memory_amount = memory.amount
                else:
                    memory_amount = method.allocate(context, "memory")
                given[(method.name, order)] = (
                    max(memory_amount, MINIMUM_ALLOCATION["memory"]),
                    max(method.allocate(context, "cpu"), MINIMUM_ALLOCATION["cpu"]))
                first[method.name] = given[(method.name, order)][0]
            continue
        context = replace(contexts.pop(order), now_s=clock + at)  # learnt at completion
        for method in methods:
            memory, cpu = given.pop((method.name, order))
            outcome = outcomes[method.name]
            if task.memory_bytes is not None:
                peak = float(task.memory_bytes)
                outcome.add_memory(memory, peak, task.runtime_s)
                confidence = stated.pop((method.name, order), None)
                if confidence is not None:
                    bucket = outcome.calibration.setdefault(min(int(confidence * 10), 9) / 10,
                                                            [0, 0])
                    bucket[0] += 1
                    bucket[1] += memory >= peak
                method.observe(context, "memory", peak, memory, task.runtime_s)
            if task.cpu_cores is not None:
                hours = task.runtime_s / HOUR
                outcome.cpu_allocated_core_h += cpu * hours
                outcome.cpu_unused_core_h += max(0.0, cpu - task.cpu_cores) * hours
                outcome.cpu_short_tasks += cpu < task.cpu_cores
                method.observe(context, "cpu", task.cpu_cores, cpu, task.runtime_s)
