"""A floor under the evaluation's figures: what a clairvoyant would waste that knows every peak in
advance but, like the methods compared, cannot tell apart tasks that look alike when sized.

The methods of ``shadowflow evaluate`` see, when they size a task, its workflow and action type,
its run, its input size and its request. Two tasks of one run with the same type and input size
are indistinguishable then, so the clairvoyant gives every task of such a class one allocation,
chosen knowing all their peaks. It also starts cold like them: a task that starts before any
task of its program completed (in this run or an earlier one, as ``sizing.borrowed_key_of``
borrows) gets the request or the default (``sizing.cold_start``). Within a budget of tasks
under-provisioned at first attempt (``under_budget`` of the tasks), it lets the classes fail
where that saves most (a failure being retried at double, as in the evaluation).

It is a reference, not a method: no method of the comparison can know a class's peaks before its
tasks ran. A target below this floor cannot be reached by sizing from what is known at sizing
time; it would need a prior for programs never seen, or inputs that tell tasks apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from streams.forecasting.evaluation import Outcome, memory_outcome, sizing_context
from streams.forecasting.sizing import MINIMUM_ALLOCATION, cold_start, program_of
from streams.traces.formats import Trace
from streams.traces.schedule import Slot, schedule

NAME = "clairvoyant floor"
"""How tables and reports name the floor."""

Class = tuple[str, str, float]
"""(run, action type, input bytes): tasks no method can tell apart when it sizes them."""


def clairvoyant_floor(traces: Sequence[Trace], under_budget: float = 0.005,
                      slots: int | None = None) -> Outcome:
    """The floor's figures over ``traces`` taken in the given order (see the module
    docstring); only tasks with a memory peak count."""
    outcome = Outcome()
    classes: dict[Class, list[tuple[float, float]]] = defaultdict(list)
    completed: set[str] = set()  # programs with a task completed in an earlier run
    for index, trace in enumerate(traces):
        run_id = f"{trace.name}#{index}"
        placed = schedule(trace, slots)
        known_from = _first_completion(placed)
        for slot in placed:
            task = slot.task
            if task.memory_bytes is None:
                continue
            peak, runtime = float(task.memory_bytes), task.runtime_s
            program = program_of(task.task_type)
            if program in completed or _known(known_from.get(program), slot):
                classes[(run_id, task.task_type, float(task.input_bytes))].append((peak, runtime))
                continue
            context = sizing_context(trace, slot, run_id, 0.0)
            outcome.add_memory(max(cold_start(context, "memory"), MINIMUM_ALLOCATION["memory"]),
                               peak, runtime)
        completed.update(known_from)
    budget = max(0, math.floor(under_budget * (outcome.tasks + sum(map(len, classes.values()))))
                 - outcome.underprovisioned)
    for allocation, tasks in _cheapest(list(classes.values()), budget):
        for peak, runtime in tasks:
            outcome.add_memory(allocation, peak, runtime)
    return outcome


def _first_completion(placed: list[Slot]) -> dict[str, tuple[float, int]]:
    """Per program: the earliest completion in the run, as (end, order of that task)."""
    first: dict[str, tuple[float, int]] = {}
    for slot in placed:
        program = program_of(slot.task.task_type)
        mark = (slot.end_s, slot.order)
        if program not in first or mark < first[program]:
            first[program] = mark
    return first


def _known(first: tuple[float, int] | None, slot: Slot) -> bool:
    """Whether a task of the program completed before ``slot`` started (completions at an
    instant come before starts at it, but a zero-length task completes right after it starts,
    as in the evaluation)."""
    if first is None:
        return False
    end, order = first
    return end < slot.start_s or (end == slot.start_s and order != slot.order
                                  and (end > 0 or order < slot.order))


def _cheapest(classes: list[list[tuple[float, float]]], budget: int
              ) -> list[tuple[float, list[tuple[float, float]]]]:
    """One allocation per class, least wastage in all with at most ``budget`` tasks
    under-provisioned (a knapsack over the budget: a class's options are its largest peaks,
    letting the tasks above each fail)."""
    best = [0.0] + [math.inf] * budget  # least wastage with ``used`` failures spent so far
    steps: list[list[tuple[int, float]]] = []  # per class, per used: (used before, allocation)
    for tasks in classes:
        options = []
        for allocation in sorted({p for p, _ in tasks}, reverse=True)[:budget + 1]:
            allocation = max(allocation, MINIMUM_ALLOCATION["memory"])
            failures = sum(allocation < p for p, _ in tasks)
            if failures <= budget:
                options.append((failures, sum(memory_outcome(allocation, p, r)[0]
                                              for p, r in tasks), allocation))
        after = [math.inf] * (budget + 1)
        step = [(0, 0.0)] * (budget + 1)
        for used, wasted_so_far in enumerate(best):
            for failures, wasted, allocation in options:
                total = used + failures
                if total <= budget and wasted_so_far + wasted < after[total]:
                    after[total] = wasted_so_far + wasted
                    step[total] = (used, allocation)
        best = after
        steps.append(step)
    used = min(range(budget + 1), key=best.__getitem__)
    chosen = []
    for step in reversed(steps):
        used, allocation = step[used]
        chosen.append(allocation)
    return list(zip(reversed(chosen), classes, strict=True))
