"""The forecaster: what to allocate for an action before it starts, with a confidence and a source.

Pure and usable offline (``shadowflow evaluate``) or online (the shadow workflows). It learns
from every completed action at three levels:

1. **this run** — once actions of the same type completed earlier in the run, their largest peak
   times a learned growth factor (how much later actions of a run exceeded the run's running
   maximum, at a high quantile) bounds the allocation: runs of one configuration differ more from
   each other than actions within a run do;
2. **this workflow type and action type** across runs — a high quantile of the peaks (``model``);
3. **this program in any configuration or workflow type** — when the action type is new to the
   workflow type and ``borrow`` is on, as for the baselines (``historical``).

With none of these, the user's request or the default is used (``manual``). A retry (attempt
``n`` > 1) gets ``2^(n-1)`` times the memory: it most likely follows running out of it. Memory is
sized for
very few failures (``memory_quantile``); CPU is sized tighter (``cpu_quantile``), since too little
CPU slows an action but does not kill it. Observations are kept in bounded windows and summaries
(quantiles) are recomputed lazily, once per batch of new observations of a key, never per event.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np

from streams.forecasting.sizing import (
    MINIMUM_ALLOCATION,
    Key,
    TaskContext,
    borrowed_key_of,
    cold_start,
    key_of,
)

MODEL = "MODEL"
HISTORICAL = "HISTORICAL"
MANUAL = "MANUAL"


@dataclass(frozen=True, slots=True)
class Forecast:
    """An allocation for one resource of one action."""

    amount: float
    confidence: float
    """Estimated probability that ``amount`` covers the action's peak."""
    source: str
    """``model`` (learned for this workflow and action type), ``historical`` (the action type
    elsewhere), or ``manual`` (nothing learned: request or default)."""
    basis: str
    """Which level decided: ``run``, ``type``, ``action`` or ``default``."""


@dataclass
class _Window:
    """A bounded window of observations (input size, peak) and summaries refitted in batches.

    When input sizes vary and explain the peaks (log-log correlation above ``min_correlation``),
    the high estimate is the fitted peak for the task's input plus a high quantile of the fit's
    residuals; otherwise it is a high quantile of the peaks. The fit and the sorted spread are
    recomputed once the window has grown by ``refit_share`` since the last fit (at least one
    observation), so a stream of observations costs a fit per batch, not per event."""

    maxlen: int
    min_correlation: float = 0.8
    refit_share: float = 0.05
    inputs: deque[float] = field(init=False)
    values: deque[float] = field(init=False)
    _fit: tuple[float, float] | None = None
    _spread: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _new: int = 0
    _max_input: float = 0.0

    def __post_init__(self) -> None:
        self.inputs = deque(maxlen=self.maxlen)
        self.values = deque(maxlen=self.maxlen)

    def add(self, input_bytes: float, value: float) -> None:
        logged = math.log1p(max(input_bytes, 0.0))
        self.inputs.append(logged)
        self._max_input = max(self._max_input, logged)
        self.values.append(math.log(max(value, 1e-9)))
        self._new += 1

    def __len__(self) -> int:
        return len(self.values)

    def covers(self, input_bytes: float, slack: float = math.log(1.5)) -> bool:
        """Whether ``input_bytes`` is within what was seen (up to 50% above the largest), or
        input sizes are unknown (0) here or in what was seen."""
        return (not input_bytes or not self._max_input
                or math.log1p(input_bytes) <= self._max_input + slack)

    def high(self, input_bytes: float, q: float, margin: float, max_slope: float = 0.0,
             max_growth: float = 8.0) -> float:
        """A high estimate of the peak for a task with ``input_bytes``. Beyond the inputs seen
        (``covers``), the estimate at the largest input seen grows with the input at the fitted
        log-log slope, or ``max_slope`` where there is no fit, capped at ``max_slope``, and by
        ``max_growth`` times at most."""
        self._refit()
        if self.covers(input_bytes):
            return self._high_at(math.log1p(max(input_bytes, 0.0)), q, margin)
        slope = max_slope if self._fit is None else min(max(self._fit[0], 0.0), max_slope)
        growth = math.exp(slope * (math.log1p(input_bytes) - self._max_input))
        return self._high_at(self._max_input, q, margin) * min(growth, max_growth)

    def _high_at(self, logged_input: float, q: float, margin: float) -> float:
        spread = self._spread
        n = len(spread)
        centre = self._centre_logged(logged_input)
        if n * (1 - q) >= 1:
            return math.exp(centre + _sorted_quantile(spread, q))
        # Few observations: the largest, with headroom shrinking as evidence grows.
        return math.exp(centre + float(spread[-1])) * (1 + margin / math.sqrt(n))

    def coverage(self, amount: float, input_bytes: float) -> float:
        """Laplace-smoothed share of past observations ``amount`` would have covered."""
        self._refit()
        level = math.log(max(amount, 1e-9)) - self._centre(input_bytes)
        below = int(np.searchsorted(self._spread, level, side="right"))
        return (below + 1) / (len(self._spread) + 2)

    def _centre(self, input_bytes: float) -> float:
        return self._centre_logged(math.log1p(max(input_bytes, 0.0)))

    def _centre_logged(self, logged_input: float) -> float:
        if self._fit is None:
            return 0.0
        slope, intercept = self._fit
        return slope * logged_input + intercept

    def _refit(self) -> None:
        if self._new == 0 or (len(self._spread) and
                              self._new < self.refit_share * len(self.values)):
            return
        self._new = 0
        x, y = np.asarray(self.inputs), np.asarray(self.values)
        self._max_input = float(x.max())  # entries may have left the window
        self._fit = None
        if (len(y) >= 10 and x.std() >= 0.05 and y.std() > 0
                and np.corrcoef(x, y)[0, 1] >= self.min_correlation):
            slope, intercept = np.polyfit(x, y, 1)
            self._fit = (float(slope), float(intercept))
            y = y - (slope * x + intercept)
        self._spread = np.sort(y)


def _sorted_quantile(ordered: np.ndarray, q: float) -> float:
    """The ``q`` quantile (linear interpolation) of an already sorted array."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


@dataclass
class Forecaster:
    """Learns per (workflow type, action type, resource); see the module docstring."""

    memory_quantile: float = 0.999
    cpu_quantile: float = 0.75
    min_samples: int = 3
    """Observations a level needs before it is trusted."""
    min_run_samples: int = 10
    """Completions of an action type in a run before the run's own maximum bounds the next."""
    small_sample_margin: float = 0.5
    """Headroom over the largest peak while a level has few observations (shrinks as it grows)."""
    extrapolation_slope: float = 0.0
    """For an input over 1.5 times the largest seen: the largest log-log slope at which the
    estimate grows with the input (0: such an input is not sized from what was learned)."""
    window: int = 2000
    borrow: bool = True
    """Whether a new action type may borrow from the same program elsewhere (``borrowed_key_of``),
    as every baseline may."""
    name: str = "shadowflow"
    _by_type: dict[Key, _Window] = field(default_factory=dict)
    _by_action: dict[Key, _Window] = field(default_factory=dict)
    _run_max: dict[tuple[str, str, str], tuple[float, int]] = field(default_factory=dict)
    _growth: dict[str, _Window] = field(default_factory=dict)

    def forecast(self, task: TaskContext, resource: str) -> Forecast:
        """The allocation for ``resource`` of ``task``, before it starts."""
        q = self.memory_quantile if resource == "memory" else self.cpu_quantile
        typed = self._by_type.get(key_of(task, resource))
        if self._usable(typed, task):
            amount = typed.high(task.input_bytes, q, self.small_sample_margin,
                                self.extrapolation_slope)
            basis, source, coverage_of = "type", MODEL, typed
            run_bound = self._run_bound(task, resource, q)
            if run_bound is not None and run_bound < amount:
                amount, basis = run_bound, "run"
        else:
            anywhere = self._by_action.get(borrowed_key_of(task, resource))
            if self._usable(anywhere, task):
                amount = anywhere.high(task.input_bytes, q, self.small_sample_margin,
                                       self.extrapolation_slope)
                basis, source, coverage_of = "action", HISTORICAL, anywhere
            else:
                amount = cold_start(task, resource)
                if resource == "memory" and task.attempt > 1:
                    amount *= 2 ** (task.attempt - 1)
                return Forecast(amount, 0.0, MANUAL, "default")
        amount = max(amount, MINIMUM_ALLOCATION[resource])
        confidence = coverage_of.coverage(amount, task.input_bytes)
        if resource == "memory" and task.attempt > 1:
            # A retry most likely follows running out of memory: double per earlier attempt.
            amount *= 2 ** (task.attempt - 1)
        return Forecast(amount, confidence, source, basis)

    def _usable(self, window: _Window | None, task: TaskContext) -> TypeGuard[_Window]:
        """Whether ``window`` has enough observations, and covers the task's input or may
        extrapolate to it."""
        return (window is not None and len(window) >= self.min_samples
                and (self.extrapolation_slope > 0 or window.covers(task.input_bytes)))

    def percentile(self, task: TaskContext, resource: str, q: float) -> float | None:
        """The plain ``q`` percentile of past peaks at the first level that knows the task (no
        run bound, no input fit): the historical fallback."""
        level = self._level(task, resource)
        if level is None:
            return None
        values = np.sort(np.exp(np.asarray(level.values)))
        return _sorted_quantile(values, q)

    def median(self, task: TaskContext, resource: str) -> float | None:
        """The median past peak at the first level that knows the task."""
        return self.percentile(task, resource, 0.5)

    def _level(self, task: TaskContext, resource: str) -> _Window | None:
        for window in (self._by_type.get(key_of(task, resource)),
                       self._by_action.get(borrowed_key_of(task, resource))):
            if window is not None and len(window) >= self.min_samples and window.covers(
                    task.input_bytes):
                return window
        return None

    def allocate(self, task: TaskContext, resource: str) -> float:
        """``forecast(...).amount`` (the ``SizingMethod`` interface)."""
        return self.forecast(task, resource).amount

    def observe(self, task: TaskContext, resource: str, actual: float, allocated: float,
                runtime_s: float) -> None:
        """Learn from a completed action's peak."""
        self._by_type.setdefault(key_of(task, resource), _Window(self.window)).add(
            task.input_bytes, actual)
        if self.borrow:
            self._by_action.setdefault(borrowed_key_of(task, resource), _Window(self.window)).add(
                task.input_bytes, actual)
        run_key = (task.run_id, task.action_type, resource)
        previous, count = self._run_max.get(run_key, (0.0, 0))
        if count >= self.min_run_samples and previous > 0:
            self._growth.setdefault(resource, _Window(self.window)).add(0.0, actual / previous)
        self._run_max[run_key] = (max(previous, actual), count + 1)

    def forget_run(self, run_id: str) -> None:
        """Drop a finished run's running maxima (bounded memory in a long-lived worker)."""
        for key in [k for k in self._run_max if k[0] == run_id]:
            del self._run_max[key]

    def _run_bound(self, task: TaskContext, resource: str, q: float) -> float | None:
        run_max, count = self._run_max.get((task.run_id, task.action_type, resource), (0.0, 0))
        growth = self._growth.get(resource)
        if count < self.min_run_samples or growth is None or len(growth) < 50:
            return None
        return run_max * max(1.0, growth.high(0.0, q, self.small_sample_margin))
