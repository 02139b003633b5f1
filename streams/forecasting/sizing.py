"""Ways to size an action before it runs: the baselines the forecaster is measured against.

Every method answers ``allocate(task, resource)`` before a task starts and learns from
``observe(task, resource, actual, allocated, runtime_s)`` when it completes. Every method gets the
same knowledge: it learns per (workflow type, action type, resource); for an action type with no
history it may borrow what was learned for the same program in other configurations and workflow
types (``borrowed_key_of``, on for every method or for none); with nothing learned at all, it
starts from the user's request where the trace has one (memory), otherwise
``DEFAULT_ALLOCATION``. A ``TaskContext`` holds only what is known when a task is sized.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

GIB = 1024**3

DEFAULT_ALLOCATION = {"memory": 2 * GIB, "cpu": 1.0, "network": 0.0, "cost": 0.0}
"""The first allocation when nothing is known: 2 GiB of memory, one core, nothing else."""

MINIMUM_ALLOCATION = {"memory": 1024**2, "cpu": 0.01, "network": 0.0, "cost": 0.0}
"""No method gives less than this (1 MiB, a hundredth of a core): traces hold zero peaks, and an
allocation of zero could never be doubled into enough."""


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


Key = tuple[str, ...]

_QUALIFIER = re.compile(r"[.:]")


def program_of(action_type: str) -> str:
    """What an action type runs, without the pipeline's qualification: nf-core's
    ``NFCORE_SAREK.SAREK.PREPARE_GENOME.BWAMEM1_INDEX`` (or ``...:BWAMEM1_INDEX``) is
    ``BWAMEM1_INDEX``, shared with other pipelines; ``blastall`` is ``blastall``."""
    return _QUALIFIER.split(action_type)[-1]


def key_of(task: TaskContext, resource: str) -> Key:
    """What methods learn per: (workflow type, action type, resource)."""
    return (task.workflow_type, task.action_type, resource)


def borrowed_key_of(task: TaskContext, resource: str) -> Key:
    """What methods may borrow from for a cold start: the same program in any configuration or
    workflow type (``program_of``)."""
    return (program_of(task.action_type), resource)


class State(Protocol):
    """What a keyed method learned for one key."""

    def add(self, task: TaskContext, actual: float, runtime_s: float) -> None:
        """Learn a completed task's peak (or mean CPU) and runtime."""
        ...

    def amount(self, task: TaskContext) -> float:
        """The allocation for ``task`` from what was learned."""
        ...


class KeyedMethod:
    """A method that learns a ``State`` per (workflow type, action type, resource) and, with
    ``borrow``, per (program, resource) too, for a cold start (equal knowledge for every method:
    the same keys, the same borrowing, the same request or default when nothing applies)."""

    name = "keyed"

    def __init__(self, borrow: bool = True) -> None:
        self.borrow = borrow
        self._states: dict[Key, State] = {}

    def new_state(self, resource: str) -> State:
        """A fresh state for one key."""
        raise NotImplementedError

    def allocate(self, task: TaskContext, resource: str) -> float:
        state = self._states.get(key_of(task, resource))
        if state is None and self.borrow:
            state = self._states.get(borrowed_key_of(task, resource))
        return cold_start(task, resource) if state is None else state.amount(task)

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        keys = [key_of(task, resource)]
        if self.borrow:
            keys.append(borrowed_key_of(task, resource))
        for key in keys:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = self.new_state(resource)
            state.add(task, actual, runtime_s)


class UserRequest:
    """The user's request (or the default) every time."""

    name = "user request"

    def allocate(self, task: TaskContext, resource: str) -> float:
        return cold_start(task, resource)

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        return None


@dataclass(slots=True)
class _Largest:
    value: float = 0.0

    def add(self, task: TaskContext, actual: float, runtime_s: float) -> None:
        self.value = max(self.value, actual)

    def amount(self, task: TaskContext) -> float:
        return self.value


class MaxSeen(KeyedMethod):
    """The largest peak seen so far."""

    name = "max seen"

    def new_state(self, resource: str) -> State:
        return _Largest()


@dataclass(slots=True)
class _Last:
    value: float = 0.0

    def add(self, task: TaskContext, actual: float, runtime_s: float) -> None:
        self.value = actual

    def amount(self, task: TaskContext) -> float:
        return self.value * 1.15


class LastPlus15(KeyedMethod):
    """The last peak seen, plus 15%."""

    name = "last + 15%"

    def new_state(self, resource: str) -> State:
        return _Last()


VPA_FIRST_BUCKET = {"memory": 1e7, "cpu": 0.01}
"""The recommender's smallest histogram bucket: 10 MB of memory, 0.01 cores."""
VPA_LARGEST = {"memory": 1e12, "cpu": 1000.0}
"""The start of its last bucket, roughly (1 TB of memory, 1000 cores)."""


@dataclass(slots=True)
class _DecayingHistogram:
    """The VPA recommender's histogram: buckets growing by ``ratio`` from ``first`` (bucket ``i``
    starts at ``first * (ratio^i - 1) / (ratio - 1)``), sample weights growing by 2 every
    ``half_life_s`` of the clock (so older samples weigh less), the percentile being the end of
    the bucket where the cumulative weight reaches it."""

    first: float
    ratio: float
    half_life_s: float
    last_bucket: int
    weights: dict[int, float] = field(default_factory=dict)
    _origin_s: float | None = None

    def add(self, task: TaskContext, actual: float, runtime_s: float) -> None:
        if self._origin_s is None:
            self._origin_s = task.now_s
        exponent = (task.now_s - self._origin_s) / self.half_life_s
        if exponent > 100:  # renormalise before the weights overflow
            self.weights = {b: w * 2.0 ** -exponent for b, w in self.weights.items()}
            self._origin_s, exponent = task.now_s, 0.0
        bucket = self._bucket(actual)
        self.weights[bucket] = self.weights.get(bucket, 0.0) + 2.0 ** exponent

    def amount(self, task: TaskContext) -> float:
        return self.percentile(0.9) * 1.15

    def percentile(self, q: float) -> float:
        """The end of the bucket where the cumulative weight reaches ``q`` of the total."""
        threshold = q * sum(self.weights.values())
        running = 0.0
        bucket = max(self.weights)
        for candidate in sorted(self.weights):
            running += self.weights[candidate]
            if running >= threshold:
                bucket = candidate
                break
        return self._start(min(bucket + 1, self.last_bucket))

    def _bucket(self, value: float) -> int:
        if value < self.first:
            return 0
        bucket = int(math.log(value * (self.ratio - 1) / self.first + 1) / math.log(self.ratio))
        return min(bucket, self.last_bucket)

    def _start(self, bucket: int) -> float:
        return self.first * (self.ratio**bucket - 1) / (self.ratio - 1)


class DecayingHistogramP90(KeyedMethod):
    """Kubernetes VPA's recommender: a decaying histogram of peaks (``_DecayingHistogram``:
    buckets from 10 MB or 0.01 cores, 5% apart, a 24 h half-life), its 90th percentile plus a
    15% safety margin. (The recommender's per-pod floor of 250 MiB is not applied: it is a pod
    policy, not a sizing estimate.)"""

    name = "VPA p90 + 15%"

    def __init__(self, borrow: bool = True, half_life_s: float = 24 * 3600.0,
                 ratio: float = 1.05) -> None:
        super().__init__(borrow)
        self._half_life = half_life_s
        self._ratio = ratio

    def new_state(self, resource: str) -> State:
        first = VPA_FIRST_BUCKET[resource]
        last = int(math.log(VPA_LARGEST[resource] * (self._ratio - 1) / first + 1)
                   / math.log(self._ratio))
        return _DecayingHistogram(first, self._ratio, self._half_life, last)


@dataclass(slots=True)
class _Samples:
    """A bounded window of (input size, peak, runtime) and a summary recomputed when it changed."""

    window: int
    summarise: Callable[[list[tuple[float, float, float]]], Callable[[float], float]]
    samples: deque[tuple[float, float, float]] = field(init=False)
    _summary: Callable[[float], float] | None = None

    def __post_init__(self) -> None:
        self.samples = deque(maxlen=self.window)

    def add(self, task: TaskContext, actual: float, runtime_s: float) -> None:
        # Zero-second tasks still count: they show the peaks to expect.
        self.samples.append((task.input_bytes, actual, max(runtime_s, 1e-3)))
        self._summary = None

    def amount(self, task: TaskContext) -> float:
        if self._summary is None:
            self._summary = self.summarise(list(self.samples))
        return self._summary(task.input_bytes)


class MinWasteFirstAllocation(KeyedMethod):
    """Tovar et al.'s job sizing: the first allocation that minimises the expected waste over the
    peaks (and runtimes) seen so far, when a failed attempt is retried at double its allocation."""

    name = "Tovar min-waste"

    def __init__(self, borrow: bool = True, window: int = 500) -> None:
        super().__init__(borrow)
        self._window = window

    def new_state(self, resource: str) -> State:
        return _Samples(self._window, _min_waste_summary)


def _min_waste_summary(samples: list[tuple[float, float, float]]) -> Callable[[float], float]:
    best = min_waste_allocation((peak, runtime) for _, peak, runtime in samples)
    return lambda input_bytes: best


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


class WittLinearRegression(KeyedMethod):
    """Witt et al.'s input-aware sizing: a least-squares line of the peak on the input size, raised
    by the largest amount a past peak exceeded the line (so it would have covered every one)."""

    name = "Witt LR + offset"

    def __init__(self, borrow: bool = True, window: int = 500) -> None:
        super().__init__(borrow)
        self._window = window

    def new_state(self, resource: str) -> State:
        return _Samples(self._window, linear_fit_with_offset)


def linear_fit_with_offset(samples: list[tuple[float, float, float]]
                           ) -> Callable[[float], float]:
    """The line through (input size, peak) of ``samples`` raised by its largest residual; while
    the input sizes seen differ by less than 10% (no slope to learn), the largest peak."""
    pairs = np.asarray([(x, y) for x, y, _ in samples], dtype=float)
    x, y = pairs[:, 0], pairs[:, 1]
    if np.ptp(x) <= 0.1 * x.max():
        largest = float(y.max())
        return lambda input_bytes: largest
    slope, intercept = np.polyfit(x, y, 1)
    offset = float((y - (slope * x + intercept)).max())
    return lambda input_bytes: float(slope * input_bytes + intercept + offset)


def baselines(borrow: bool = True) -> list[SizingMethod]:
    """The baselines, fresh; ``borrow``: whether they may borrow across configurations and
    workflow types for a cold start (``borrowed_key_of``)."""
    return [UserRequest(), MaxSeen(borrow), LastPlus15(borrow), DecayingHistogramP90(borrow),
            MinWasteFirstAllocation(borrow), WittLinearRegression(borrow)]
