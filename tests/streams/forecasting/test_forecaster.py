"""The forecaster's levels: default, the action elsewhere, the workflow type, the run."""

from __future__ import annotations

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
