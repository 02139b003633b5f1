"""The forecaster's levels: default, the action elsewhere, the workflow type, the run."""

from __future__ import annotations

import math
import random

import pytest

from streams.forecasting.forecaster import HISTORICAL, MANUAL, MODEL, Forecaster
from streams.forecasting.sizing import DEFAULT_ALLOCATION, TaskContext

MB = 2**20


def _task(workflow_type: str = "wf", run: str = "r1", action: str = "align",
          input_bytes: float = 1e9, requested: float | None = None) -> TaskContext:
    return TaskContext(workflow_type, run, action, input_bytes=input_bytes,
                       requested_memory=requested)


def _learn(forecaster: Forecaster, task: TaskContext, peaks: list[float]) -> None:
    for peak in peaks:
        forecaster.observe(task, "memory", peak, peak, 60.0)


def test_from_default_to_the_action_elsewhere_to_the_workflow_type() -> None:
    forecaster = Forecaster()
    first = forecaster.forecast(_task(), "memory")
    assert (first.amount, first.source, first.confidence) == (
        DEFAULT_ALLOCATION["memory"], MANUAL, 0.0)
    assert forecaster.forecast(_task(requested=3e9), "memory").amount == 3e9

    _learn(forecaster, _task("other"), [500 * MB, 520 * MB, 510 * MB])
    elsewhere = forecaster.forecast(_task(), "memory")
    assert elsewhere.source == HISTORICAL and elsewhere.amount >= 520 * MB

    _learn(forecaster, _task(run="r0"), [100 * MB, 110 * MB, 105 * MB, 108 * MB])
    typed = forecaster.forecast(_task(), "memory")
    assert typed.source == MODEL and 110 * MB <= typed.amount < 200 * MB
    assert 0.5 < typed.confidence <= 1.0


def test_an_input_far_beyond_anything_seen_is_extrapolated_with_a_capped_slope() -> None:
    forecaster = Forecaster(extrapolation_slope=1.0)
    _learn(forecaster, _task(input_bytes=1e6), [15 * MB] * 20)
    near = forecaster.forecast(_task(input_bytes=1.2e6), "memory")
    assert near.source == MODEL
    beyond = forecaster.forecast(_task(input_bytes=5e6), "memory")
    # No slope learnt (one input size): the cap, here proportional to the input...
    assert beyond.source == MODEL and beyond.amount == pytest.approx(near.amount * 5, rel=1e-3)
    # ... growing 8 times at most.
    far = forecaster.forecast(_task(input_bytes=1e9), "memory")
    assert far.amount == pytest.approx(near.amount * 8, rel=1e-3)
    giving_up = Forecaster(extrapolation_slope=0.0)
    _learn(giving_up, _task(input_bytes=1e6), [15 * MB] * 20)
    assert giving_up.forecast(_task(input_bytes=9e6), "memory").source == MANUAL


def test_input_size_is_used_when_it_explains_the_peaks() -> None:
    forecaster = Forecaster()
    rng = random.Random(3)
    for _ in range(200):
        size = rng.uniform(1e8, 1e9)
        forecaster.observe(_task(input_bytes=size), "memory", size * 0.5, 0.0, 60.0)
    small = forecaster.forecast(_task(input_bytes=2e8), "memory").amount
    large = forecaster.forecast(_task(input_bytes=8e8), "memory").amount
    assert 1e8 <= small < 1.2e8 and 4e8 <= large < 4.8e8


def test_the_run_bounds_its_own_later_actions() -> None:
    forecaster = Forecaster(min_run_samples=3)
    rng = random.Random(5)
    # Past runs of one configuration: each run's peaks sit near its own level (500-1000 MB).
    for run in range(20):
        level = rng.uniform(500, 1000) * MB
        _learn(forecaster, _task(run=f"past{run}"),
               [level * rng.uniform(0.98, 1.02) for _ in range(10)])
    fresh = forecaster.forecast(_task(run="now"), "memory")
    assert fresh.basis == "type" and fresh.amount > 1000 * MB
    _learn(forecaster, _task(run="now"), [520 * MB, 515 * MB, 525 * MB])
    bounded = forecaster.forecast(_task(run="now"), "memory")
    assert bounded.basis == "run" and 525 * MB <= bounded.amount < 600 * MB


def test_a_retry_gets_double_the_memory_per_earlier_attempt() -> None:
    forecaster = Forecaster()
    _learn(forecaster, _task(), [100 * MB] * 20)
    first = forecaster.forecast(_task(), "memory").amount
    retry = TaskContext("wf", "r1", "align", attempt=3, input_bytes=1e9)
    assert forecaster.forecast(retry, "memory").amount == 4 * first


def test_memory_is_the_cheapest_allocation_once_failures_are_priced() -> None:
    # 997 tasks of 100 MB and 3 of 1000 MB, an hour each. At 100 MB, the 3 fail at 100, 200,
    # 400 and 800 MB and fit at 1600: (1500 + 600) MB·h each, 6.3 MB·h per task on average,
    # and a failure chance of 4/1001; at 1000 MB, 900 MB·h wasted per 100 MB task.
    task = _task(input_bytes=0)
    priced = Forecaster(failure_cost_gbh=0.25)
    unpriced = Forecaster(failure_cost_gbh=float("inf"))
    for forecaster in (priced, unpriced):
        for peak in [100 * MB] * 997 + [1000 * MB] * 3:
            forecaster.observe(task, "memory", peak, peak, 3600.0)
    assert priced.forecast(task, "memory").amount == pytest.approx(100 * MB)
    # Priced higher than the 0.9 GB·h it saves per task, a failure is avoided.
    assert Forecaster(failure_cost_gbh=1000.0, _by_type=priced._by_type).forecast(
        task, "memory").amount > 1000 * MB
    # Unpriced: the memory quantile (0.999) once there are enough observations, else the
    # largest with headroom.
    assert unpriced.forecast(task, "memory").amount == pytest.approx(1000 * MB)
    few = Forecaster(failure_cost_gbh=float("inf"), small_sample_margin=0.5)
    _learn(few, task, [100 * MB] * 99 + [1000 * MB])
    assert few.forecast(task, "memory").amount == pytest.approx(
        1000 * MB * (1 + 0.5 / math.sqrt(100)))


def test_an_input_beyond_anything_seen_with_no_evidence_stays_below_the_default() -> None:
    # Learnt on 10 KB inputs only: whether a 5 GB input matters is unknown.
    forecaster = Forecaster(extrapolation_slope=1.5, small_sample_margin=0.5)
    _learn(forecaster, _task(input_bytes=1e4), [1.2e9] * 20)
    blind = forecaster.forecast(_task(input_bytes=5e9), "memory")
    assert blind.amount == pytest.approx(DEFAULT_ALLOCATION["memory"])
    # The same program elsewhere saw inputs from 10 KB to 5 GB that did not matter: no growth.
    _learn(forecaster, _task("other", input_bytes=1e4), [1.2e9] * 10)
    _learn(forecaster, _task("other", input_bytes=5e9), [1.2e9] * 10)
    informed = forecaster.forecast(_task(input_bytes=5e9), "memory")
    assert informed.source == MODEL and 1.2e9 < informed.amount < 1.2e9 * 1.12


def test_a_sibling_above_the_default_raises_it_before_the_type_is_trusted() -> None:
    forecaster = Forecaster(min_samples=3)
    _learn(forecaster, _task(), [3e9])
    raised = forecaster.forecast(_task(), "memory")
    assert raised.amount >= 3e9 and raised.source == MODEL
    _learn(forecaster, _task(action="small"), [1e8])
    assert forecaster.forecast(_task(action="small"), "memory").source == MANUAL


def test_configurations_of_one_program_pool_what_they_learn() -> None:
    rng = random.Random(7)
    forecaster = Forecaster(failure_cost_gbh=0.25)
    for config in ("10a", "20a", "30a"):
        for _ in range(200):
            peak = (400 if rng.random() < 0.5 else 325) * MB
            forecaster.observe(_task(f"sra-{config}", input_bytes=0), "memory", peak, peak,
                               600.0)
    # A configuration with few observations of its own, like the others: the pool decides,
    # never below its own largest.
    _learn(forecaster, _task("sra-40a", input_bytes=0), [400 * MB, 330 * MB, 390 * MB])
    pooled = forecaster.forecast(_task("sra-40a", input_bytes=0), "memory")
    assert pooled.basis == "pooled" and 400 * MB <= pooled.amount < 420 * MB
    alone = Forecaster(failure_cost_gbh=0.25, pool=False, _by_type=forecaster._by_type,
                       _by_action=forecaster._by_action)
    assert alone.forecast(_task("sra-40a", input_bytes=0), "memory").amount > 500 * MB
