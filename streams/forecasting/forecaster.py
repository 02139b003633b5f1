"""The forecaster: what to allocate for an action before it starts, with a confidence and a source.

Pure and usable offline (``shadowflow evaluate``) or online (the shadow workflows). It learns
from every completed action at three levels:

1. **this run** — once actions of the same type completed earlier in the run, their largest peak
   times a learned growth factor (how much later actions of a run exceeded the run's running
   maximum, at a high quantile) bounds the allocation: runs of one configuration differ more from
   each other than actions within a run do;
2. **this workflow type and action type** across runs (``model``) — pooled with the same
   program's other configurations when this key's peaks look like a sample of theirs;
3. **this program in any configuration or workflow type** — when the action type is new to the
   workflow type and ``borrow`` is on, as for the baselines (``historical``), with extra headroom.

With none of these, the user's request or the default is used (``manual``), raised by any
sibling that already peaked above it. A retry (attempt ``n`` > 1) gets ``2^(n-1)`` times the
memory (at most ``2^MAX_RETRY_DOUBLINGS``): it most likely follows running out of it.

Memory is cost-aware: at each level, the allocation minimising the wastage it would have caused
over the observations (a failure retried at double until it fits, weighted by runtime, as Tovar
et al. do) plus a price per failure at first attempt (``failure_cost_gbh`` times the chance of one),
so that the failure budget goes where it saves most. Input sizes scale the estimate where they
explain the peaks, and beyond the inputs seen grow it at a capped slope where there is evidence
(this key's or its program's inputs spanned a factor of 2), otherwise never beyond the default.
CPU is a quantile (``cpu_quantile``): too little CPU slows an action but does not kill it.
Observations are kept in bounded windows and summaries (fits, candidate costs) are recomputed
lazily, once per batch of new observations of a key, never per event.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from streams.forecasting.sizing import (
    MINIMUM_ALLOCATION,
    Key,
    TaskContext,
    borrowed_key_of,
    cold_start,
    key_of,
)

MAX_RETRY_DOUBLINGS = 10
"""A retry's memory doubles per earlier attempt up to this many times (1024x), so a huge attempt
number cannot overflow the amount."""

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
    """``MODEL`` (learned for this workflow and action type), ``HISTORICAL`` (the action type
    elsewhere), or ``MANUAL`` (nothing learned: request or default)."""
    basis: str
    """Which level decided: ``run``, ``type``, ``action`` or ``default``."""


@dataclass
class _Window:
    """A bounded window of observations (input size, peak, runtime) and summaries refitted in
    batches.

    When input sizes vary and explain the peaks (log-log correlation above ``min_correlation``),
    estimates are the fitted peak for the task's input times a factor taken from the fit's
    residuals; otherwise the factor applies to 1 (the peaks themselves). The fit, the sorted
    residuals and the cost of each candidate factor (``_costs``) are recomputed once the window
    has grown by ``refit_share`` since the last fit (at least one observation), so a stream of
    observations costs a fit per batch, not per event."""

    maxlen: int
    min_correlation: float = 0.8
    refit_share: float = 0.05
    inputs: deque[float] = field(init=False)
    values: deque[float] = field(init=False)
    runtimes: deque[float] = field(init=False)
    _fit: tuple[float, float] | None = None
    _spread: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _new: int = 0
    _max_input: float = 0.0
    _candidates: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _waste: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _risk: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _cost_margin: float = -1.0
    _cheapest_at: tuple[tuple[float, float], float] | None = None
    _spans: bool = False
    _sorted_runtimes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _sorted_peaks: np.ndarray | None = None
    _largest: float = -math.inf

    def __post_init__(self) -> None:
        self.inputs = deque(maxlen=self.maxlen)
        self.values = deque(maxlen=self.maxlen)
        self.runtimes = deque(maxlen=self.maxlen)

    def add(self, input_bytes: float, value: float, runtime_s: float = 1.0) -> None:
        logged = math.log1p(max(input_bytes, 0.0))
        self.inputs.append(logged)
        self._max_input = max(self._max_input, logged)
        self.values.append(math.log(max(value, 1e-9)))
        self._largest = max(self._largest, self.values[-1])
        self.runtimes.append(max(runtime_s, 1e-3))
        self._new += 1

    def __len__(self) -> int:
        return len(self.values)

    def covers(self, input_bytes: float, slack: float = math.log(1.5)) -> bool:
        """Whether ``input_bytes`` is within what was seen (up to 50% above the largest), or
        input sizes are unknown (0) here or in what was seen."""
        return (not input_bytes or not self._max_input
                or math.log1p(input_bytes) <= self._max_input + slack)

    def largest(self) -> float:
        """The largest peak in the window (since the last refit, also any that left it)."""
        return math.exp(self._largest)

    def percentile(self, q: float) -> float:
        """The ``q`` quantile of the peaks in the window (not of the fit's residuals)."""
        self._refit()
        if self._sorted_peaks is None:
            self._sorted_peaks = np.sort(np.asarray(self.values))
        return math.exp(_sorted_quantile(self._sorted_peaks, q))

    def fitted(self) -> bool:
        """Whether input sizes explain the peaks (a fit is in use)."""
        self._refit()
        return self._fit is not None

    def spans(self) -> bool:
        """Whether the inputs seen differ by a factor of 2 or more (over 10 observations or
        more): enough to tell whether they explain the peaks."""
        self._refit()
        return self._spans

    def evidence(self) -> float | None:
        """What the window says of how peaks grow with input beyond what was seen: the fitted
        log-log slope (at least 0) where the inputs ``spans`` and explain the peaks, 0 where they
        span but do not, ``None`` where there is no telling."""
        self._refit()
        if not self._spans:
            return None
        return 0.0 if self._fit is None else max(self._fit[0], 0.0)

    def growth(self, input_bytes: float, slope: float, max_growth: float = 8.0) -> float:
        """How much more than at the largest input seen a task with ``input_bytes`` is expected
        to peak at, growing at ``slope`` (log-log), ``max_growth`` times at most; 1 within what
        was seen (``covers``)."""
        if self.covers(input_bytes):
            return 1.0
        return min(math.exp(max(slope, 0.0) * (math.log1p(input_bytes) - self._max_input)),
                   max_growth)

    def high(self, input_bytes: float, q: float, margin: float) -> float:
        """A high estimate (the ``q`` quantile) of the peak for a task with ``input_bytes``,
        within the inputs seen (beyond them, at the largest; see ``growth``)."""
        self._refit()
        return self._high_at(self._logged(input_bytes), q, margin)

    def _logged(self, input_bytes: float) -> float:
        """The logged input to estimate at: the largest seen for an input beyond them."""
        return math.log1p(max(input_bytes, 0.0)) if self.covers(input_bytes) else self._max_input

    def _high_at(self, logged_input: float, q: float, margin: float) -> float:
        spread = self._spread
        n = len(spread)
        centre = self._centre_logged(logged_input)
        if n * (1 - q) >= 1:
            return math.exp(centre + _sorted_quantile(spread, q))
        # Few observations: the largest, with headroom shrinking as evidence grows.
        return math.exp(centre + float(spread[-1])) * (1 + margin / math.sqrt(n))

    def cheapest(self, input_bytes: float, margin: float, failure_cost_gbh: float) -> float:
        """The allocation with the least expected cost for a task with ``input_bytes`` (within
        the inputs seen; beyond, at the largest): the wastage it would have caused over the
        window (a failed attempt retried at double until it fits, weighted by the runtimes
        seen), plus ``failure_cost_gbh`` GB·h times the chance of a failure at first attempt
        ((peaks seen above it + 1) / (n + 1)). The candidates are the peaks (residuals) seen
        near the top and, with no risk charged, the largest with headroom
        ``1 + margin / sqrt(n)``: Tovar et al.'s choice with failures priced."""
        self._refit()
        if self._cost_margin != margin:
            self._price(margin)
        scale = math.exp(self._centre_logged(self._logged(input_bytes)))
        if self._cheapest_at is not None and self._cheapest_at[0] == (scale, failure_cost_gbh):
            return self._cheapest_at[1]
        candidates = self._candidates
        best = len(candidates) - 1
        if best and failure_cost_gbh != math.inf:
            best = int(np.argmin(scale * self._waste + failure_cost_gbh * self._risk))
        amount = scale * float(candidates[best])
        self._cheapest_at = ((scale, failure_cost_gbh), amount)
        return amount

    def _price(self, margin: float, top: int = 48) -> None:
        """Each candidate factor's expected wastage (GB·h per unit of the fitted centre) and
        chance of a failure; recomputed at each refit."""
        self._cost_margin = margin
        self._cheapest_at = None
        residuals, runtimes = self._spread, self._sorted_runtimes
        n = len(residuals)
        peaks = np.exp(residuals)
        headroom = float(peaks[-1]) * (1 + margin / math.sqrt(n))
        distinct = np.unique(peaks[max(0, n - top):])
        candidates = np.append(distinct, headroom)
        # Tasks at or below a candidate waste (candidate - peak) x runtime: from cumulative sums.
        weighted = np.cumsum(runtimes)
        weighted_peaks = np.cumsum(runtimes * peaks)
        covered = np.searchsorted(peaks, candidates, side="right")
        index = np.maximum(covered - 1, 0)
        waste = np.where(covered > 0, candidates * weighted[index] - weighted_peaks[index], 0.0)
        # The few above a candidate fail and are retried at double until they fit.
        start = int(covered.min())
        over_peaks, over_runtimes = peaks[start:], runtimes[start:]
        a = candidates[:, None]
        doublings = np.ceil(np.log2(np.maximum(over_peaks[None, :] / a, 1.0)))
        grown = a * 2.0 ** doublings
        failed = (over_peaks[None, :] > a) * ((grown - a) + (grown - over_peaks[None, :]))
        waste = waste + (failed * over_runtimes[None, :]).sum(axis=1)
        self._candidates = candidates
        self._waste = waste / n / (GB * HOUR)
        self._risk = (n - covered + 1) / (n + 1)
        self._risk[-1] = 0.0

    def coverage(self, amount: float, input_bytes: float) -> float:
        """Laplace-smoothed share of past observations ``amount`` would have covered (within
        the inputs seen; beyond them, at the largest)."""
        self._refit()
        level = math.log(max(amount, 1e-9)) - self._centre_logged(self._logged(input_bytes))
        below = int(np.searchsorted(self._spread, level, side="right"))
        return (below + 1) / (len(self._spread) + 2)

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
        self._cost_margin = -1.0
        self._sorted_peaks = None
        x, y = np.asarray(self.inputs), np.asarray(self.values)
        self._max_input = float(x.max())  # entries may have left the window
        self._largest = float(y.max())
        self._spans = len(y) >= 10 and float(x.max() - x.min()) >= math.log(2)
        self._fit = None
        if (len(y) >= 10 and x.std() >= 0.05 and y.std() > 0
                and np.corrcoef(x, y)[0, 1] >= self.min_correlation):
            slope, intercept = np.polyfit(x, y, 1)
            self._fit = (float(slope), float(intercept))
            y = y - (slope * x + intercept)
        order = np.argsort(y, kind="stable")
        self._spread = y[order]
        self._sorted_runtimes = np.asarray(self.runtimes)[order]


GB = 1e9
HOUR = 3600.0


def retry_factor(attempt: int) -> float:
    """How many times a first attempt's memory attempt ``attempt`` gets: doubled per earlier
    attempt, at most ``2^MAX_RETRY_DOUBLINGS`` times."""
    return 2.0 ** min(max(attempt - 1, 0), MAX_RETRY_DOUBLINGS)


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
    """The quantile of past peaks used for memory where failures are not priced
    (``failure_cost_gbh`` infinite) and by ``percentile`` callers as a fallback."""
    cpu_quantile: float = 0.75
    min_samples: int = 3
    """Observations a level needs before it is trusted."""
    min_run_samples: int = 10
    """Completions of an action type in a run before the run's own maximum bounds the next."""
    small_sample_margin: float = 1.0
    """Headroom over the largest peak while a level has few observations (shrinks as it grows)."""
    failure_cost_gbh: float = 1.0
    """What a task under-provisioned at first attempt costs beyond its retry's own wastage, in
    GB·h: memory is the allocation minimising the expected wastage plus this times the chance
    of a failure (``_Window.cheapest``); infinite: the largest peak with headroom, or the
    ``memory_quantile`` once there are enough observations."""
    extrapolation_slope: float = 1.5
    """For an input over 1.5 times the largest seen: the largest log-log slope at which the
    estimate grows with the input (0: such an input is not sized from what was learned). The
    slope is the key's fitted one where its inputs spanned a factor of 2 or more, else the same
    program's elsewhere; with no such evidence, the cap itself, but never beyond what nothing
    learned would give (the request or default) unless the estimate already was."""
    max_growth: float = 8.0
    """The most an extrapolated estimate grows over the estimate at the largest input seen."""
    borrowed_headroom: float = 0.5
    """Extra headroom (a share) on an estimate borrowed from the same program elsewhere: the
    same program varies more between workflows than within one."""
    pool: bool = True
    """Whether a key may use its program's estimate over every configuration (``_pooled``)."""
    window: int = 2000
    borrow: bool = True
    """Whether a new action type may borrow from the same program in other configurations or
    workflow types (``borrowed_key_of``), as every baseline may."""
    name: str = "shadowflow"
    _by_type: dict[Key, _Window] = field(default_factory=dict)
    _by_action: dict[Key, _Window] = field(default_factory=dict)
    _run_max: dict[str, dict[tuple[str, str], tuple[float, int]]] = field(default_factory=dict)
    """Per run id, per (action type, resource): the run's largest peak and how many were seen
    (by run, so ``forget_run`` costs what the run learned, not what every run did)."""
    _growth: dict[str, _Window] = field(default_factory=dict)

    def forecast(self, task: TaskContext, resource: str) -> Forecast:
        """The allocation for ``resource`` of ``task``, before it starts."""
        borrowed = self._by_action.get(borrowed_key_of(task, resource))
        typed = self._by_type.get(key_of(task, resource))
        estimate = self._estimate(typed, borrowed, task, resource)
        if estimate is not None:
            amount, window, grown = estimate
            basis, source = "type", MODEL
            pooled = self._pooled(typed, borrowed, task, resource)
            if pooled is not None and pooled < amount:
                amount, window, grown, basis = pooled, borrowed, 1.0, "pooled"
            run_bound = self._run_bound(task, resource)
            if run_bound is not None and run_bound < amount:
                amount, basis = run_bound, "run"
        else:
            estimate = self._estimate(borrowed, None, task, resource)
            if estimate is None:
                amount = cold_start(task, resource)
                if resource == "memory" and task.attempt > 1:
                    amount *= retry_factor(task.attempt)
                return Forecast(amount, 0.0, MANUAL, "default")
            (amount, window, grown), basis, source = estimate, "action", HISTORICAL
            amount *= 1 + self.borrowed_headroom
            grown *= 1 + self.borrowed_headroom
        amount = max(amount, MINIMUM_ALLOCATION[resource])
        confidence = window.coverage(amount / grown, task.input_bytes)
        if resource == "memory" and task.attempt > 1:
            # A retry most likely follows running out of memory: double per earlier attempt.
            amount *= retry_factor(task.attempt)
        return Forecast(amount, confidence, source, basis)

    def _estimate(self, window: _Window | None, elsewhere: _Window | None, task: TaskContext,
                  resource: str) -> tuple[float, _Window, float] | None:
        """The amount ``window`` gives ``task``, and how much of it is growth beyond the inputs
        seen (``None`` when it has too few observations or the task's input is beyond what it
        saw and may not be extrapolated to)."""
        if window is None or not len(window):
            return None
        if len(window) < self.min_samples:
            # Too few to trust, but never less than one of them needed: a sibling that peaked
            # above the request or default raises it.
            largest = window.largest() * (1 + self.small_sample_margin / math.sqrt(len(window)))
            if largest > cold_start(task, resource):
                return largest, window, 1.0
            return None
        beyond = not window.covers(task.input_bytes)
        if beyond and self.extrapolation_slope <= 0:
            return None
        if resource == "memory" and self.failure_cost_gbh != math.inf:
            amount = window.cheapest(task.input_bytes, self.small_sample_margin,
                                     self.failure_cost_gbh)
        else:
            q = self.memory_quantile if resource == "memory" else self.cpu_quantile
            amount = window.high(task.input_bytes, q, self.small_sample_margin)
        if not beyond:
            return amount, window, 1.0
        slope = window.evidence()
        if slope is None and elsewhere is not None:
            slope = elsewhere.evidence()
        proven = slope is not None
        slope = min(self.extrapolation_slope if slope is None else slope,
                    self.extrapolation_slope)
        grown = amount * window.growth(task.input_bytes, slope, self.max_growth)
        if not proven:  # no evidence: never beyond what knowing nothing would give
            grown = min(grown, max(amount, cold_start(task, resource)))
        return grown, window, grown / amount

    def _pooled(self, typed: _Window | None, borrowed: _Window | None, task: TaskContext,
                resource: str) -> float | None:
        """The same program's estimate over every configuration, when it saw more and this
        key's peaks look like a sample of it (their largest between the pool's 90th percentile
        and its largest), never below this key's own largest: configurations that differ only
        in how many tasks they run share what they learn."""
        if (not self.pool or typed is None or borrowed is None or resource != "memory"
                or len(borrowed) <= len(typed) or not typed.covers(task.input_bytes)
                or not borrowed.covers(task.input_bytes) or typed.fitted() or borrowed.fitted()):
            return None
        largest = typed.largest()
        if not borrowed.percentile(0.9) <= largest <= borrowed.largest():
            return None
        return max(largest, borrowed.cheapest(task.input_bytes, self.small_sample_margin,
                                              self.failure_cost_gbh))

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
        """Learn from a completed action's peak. A non-finite or negative peak or runtime is
        ignored: one poisoned value would otherwise poison every later forecast of the key."""
        if not (math.isfinite(actual) and actual >= 0 and math.isfinite(runtime_s)):
            return
        self._window_of(self._by_type, key_of(task, resource)).add(
            task.input_bytes, actual, runtime_s)
        if self.borrow:
            self._window_of(self._by_action, borrowed_key_of(task, resource)).add(
                task.input_bytes, actual, runtime_s)
        run_max = self._run_max.setdefault(task.run_id, {})
        previous, count = run_max.get((task.action_type, resource), (0.0, 0))
        if count >= self.min_run_samples and previous > 0:
            self._window_of(self._growth, resource).add(0.0, actual / previous)
        run_max[(task.action_type, resource)] = (max(previous, actual), count + 1)

    def _window_of(self, windows: dict, key: object) -> _Window:
        window = windows.get(key)
        if window is None:
            window = windows[key] = _Window(self.window)
        return window

    def forget_run(self, run_id: str) -> None:
        """Drop a finished run's running maxima (bounded memory in a long-lived worker)."""
        self._run_max.pop(run_id, None)

    def _run_bound(self, task: TaskContext, resource: str) -> float | None:
        run_max, count = self._run_max.get(task.run_id, {}).get((task.action_type, resource),
                                                                 (0.0, 0))
        growth = self._growth.get(resource)
        if count < self.min_run_samples or growth is None or len(growth) < 50:
            return None
        q = self.memory_quantile if resource == "memory" else self.cpu_quantile
        return run_max * max(1.0, growth.high(0.0, q, self.small_sample_margin))
