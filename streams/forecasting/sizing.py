"""Ways to size an action before it runs: the baselines the forecaster is measured against.

Every method answers ``allocate(task, resource)`` before a task starts and learns from
``observe(task, resource, actual, allocated)`` when it completes. Methods learn per (workflow type,
action type, resource). With nothing learned yet, every method starts from the same place: the
user's request where the trace has one (memory), otherwise ``DEFAULT_ALLOCATION``.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

GIB = 1024**3

DEFAULT_ALLOCATION = {"memory": 2 * GIB, "cpu": 1.0, "network": 0.0, "cost": 0.0}
"""The first allocation when nothing is known: 2 GiB of memory, one core, nothing else."""

MINIMUM_ALLOCATION = {"memory": 1024**2, "cpu": 0.01, "network": 0.0, "cost": 0.0}
"""No method gives less than this (1 MiB, a hundredth of a core): traces hold zero peaks, and an
allocation of zero could never be doubled into enough."""

RESOURCES = ("memory", "cpu")


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What is known of a task before it starts."""

    workflow_type: str
    run_id: str
    action_type: str
    attempt: int = 1
    input_bytes: float = 0.0
    order: int = 0
    """The task's position among its run's starts."""
    requested_memory: float | None = None
    now_s: float = 0.0
    """The evaluation's clock (for methods that forget with time)."""


class SizingMethod(Protocol):
    """A way to size tasks."""

    name: str

    def allocate(self, task: TaskContext, resource: str) -> float:
        """The amount to give ``task`` of ``resource`` (bytes of memory, cores)."""
        ...

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        """What the task really used (its peak), what it had been given, how long it ran."""
        ...


def cold_start(task: TaskContext, resource: str) -> float:
    """The first allocation when a method knows nothing of the task's type."""
    if resource == "memory" and task.requested_memory:
        return float(task.requested_memory)
    return float(DEFAULT_ALLOCATION[resource])


Key = tuple[str, str, str]


def key_of(task: TaskContext, resource: str) -> Key:
    """What methods learn per: (workflow type, action type, resource)."""
    return (task.workflow_type, task.action_type, resource)


class UserRequest:
    """The user's request (or the default) every time."""

    name = "user request"

    def allocate(self, task: TaskContext, resource: str) -> float:
        return cold_start(task, resource)

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        return None


class MaxSeen:
    """The largest peak seen so far."""

    name = "max seen"

    def __init__(self) -> None:
        self._max: dict[Key, float] = {}

    def allocate(self, task: TaskContext, resource: str) -> float:
        return self._max.get(key_of(task, resource)) or cold_start(task, resource)

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        key = key_of(task, resource)
        self._max[key] = max(self._max.get(key, 0.0), actual)


class LastPlus15:
    """The last peak seen, plus 15%."""

    name = "last + 15%"

    def __init__(self) -> None:
        self._last: dict[Key, float] = {}

    def allocate(self, task: TaskContext, resource: str) -> float:
        last = self._last.get(key_of(task, resource))
        return last * 1.15 if last else cold_start(task, resource)

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        self._last[key_of(task, resource)] = actual


class DecayingHistogramP90:
    """Kubernetes VPA's recommender, simplified: a histogram of peaks in exponentially growing
    buckets (5% apart), weights halving every ``half_life_s``; the 90th percentile plus 15%."""

    name = "VPA p90 + 15%"

    def __init__(self, half_life_s: float = 24 * 3600.0, ratio: float = 1.05) -> None:
        self._half_life = half_life_s
        self._log_ratio = math.log(ratio)
        self._buckets: dict[Key, dict[int, float]] = defaultdict(dict)

    def allocate(self, task: TaskContext, resource: str) -> float:
        buckets = self._buckets.get(key_of(task, resource))
        if not buckets:
            return cold_start(task, resource)
        # Weights are stored grown by 2^(t / half_life), so older samples weigh less.
        total = sum(buckets.values())
        running = 0.0
        for bucket in sorted(buckets):
            running += buckets[bucket]
            if running >= 0.9 * total:
                return math.exp((bucket + 1) * self._log_ratio) * 1.15
        return math.exp((max(buckets) + 1) * self._log_ratio) * 1.15

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        bucket = int(math.log(max(actual, 1e-9)) / self._log_ratio)
        weight = 2.0 ** (task.now_s / self._half_life)
        buckets = self._buckets[key_of(task, resource)]
        buckets[bucket] = buckets.get(bucket, 0.0) + weight


class MinWasteFirstAllocation:
    """Tovar et al.'s job sizing: the first allocation that minimises the expected waste over the
    peaks (and runtimes) seen so far, when a failed attempt is retried at double its allocation."""

    name = "Tovar min-waste"

    def __init__(self, window: int = 500) -> None:
        self._samples: dict[Key, deque[tuple[float, float]]] = defaultdict(
            lambda: deque(maxlen=window))
        self._best: dict[Key, float] = {}

    def allocate(self, task: TaskContext, resource: str) -> float:
        key = key_of(task, resource)
        if key not in self._best:
            samples = self._samples.get(key)
            if not samples:
                return cold_start(task, resource)
            self._best[key] = min_waste_allocation(samples)
        return self._best[key]

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        # Zero-second tasks still count: they show the peaks to expect.
        key = key_of(task, resource)
        self._samples[key].append((actual, max(runtime_s, 1e-3)))
        self._best.pop(key, None)


def min_waste_allocation(samples: Iterable[tuple[float, float]]) -> float:
    """Among the peaks seen, the first allocation with the least total waste over ``samples``
    (peak, runtime), a failure being retried at double the allocation."""
    pairs = np.asarray(list(samples), dtype=float)
    peaks, runtimes = pairs[:, 0], pairs[:, 1]
    positive = peaks[peaks > 0]
    if not len(positive):  # only zero peaks: any allocation fits; callers apply their floor
        return 0.0
    candidates = np.unique(positive)
    if len(candidates) > 64:
        candidates = np.unique(np.quantile(positive, np.linspace(0, 1, 65)))
    a = candidates[:, None]
    # Doublings needed before the allocation holds the peak; then the waste in closed form:
    # failed attempts a(2^k - 1)t, plus the successful one's (a 2^k - p)t.
    k = np.ceil(np.log2(np.maximum(peaks[None, :] / a, 1.0)))
    grown = a * 2.0 ** k
    waste = ((grown - a) + (grown - peaks[None, :])) * runtimes[None, :]
    return float(candidates[int(np.argmin(waste.sum(axis=1)))])


def baselines() -> list[SizingMethod]:
    """The baselines, fresh."""
    return [UserRequest(), MaxSeen(), LastPlus15(), DecayingHistogramP90(),
            MinWasteFirstAllocation()]


def names(methods: Iterable[SizingMethod]) -> list[str]:
    """The methods' names."""
    return [m.name for m in methods]
