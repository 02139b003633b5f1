"""The clairvoyant floor, by hand: cold starts like the methods, one allocation per class of
tasks that look alike when sized, failures only within the budget where they save most."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.forecasting.evaluation import GB, evaluate
from streams.forecasting.floor import clairvoyant_floor
from streams.forecasting.selection import GRID, leave_one_family_out
from streams.forecasting.sizing import GIB, baselines
from streams.traces.formats import load_trace
from tests.streams.forecasting.test_evaluation import MB, _wfformat
from topology.evaluate import lofo_json, lofo_table

COLD_A = (2 * GIB - 100 * MB) / GB
"""A, the first task: nothing of its program completed, the 2 GiB default for an hour."""


def _chain(path: Path, inputs: dict[str, int] | None = None):
    # One slot: A, B, C, D one after another, all of type "x".
    return load_trace(_wfformat(path, [
        ("A", "x", [], 3600.0, 100 * MB), ("B", "x", ["A"], 3600.0, 200 * MB),
        ("C", "x", ["B"], 1800.0, 150 * MB), ("D", "x", ["C"], 36_000.0, 150 * MB)],
        inputs=inputs))


def test_no_failure_budget_gives_each_class_its_largest_peak(tmp_path: Path) -> None:
    floor = clairvoyant_floor([_chain(tmp_path / "hand-001.json")], under_budget=0.0)
    # B, C, D look alike (type x, no input): one allocation, B's 200 MB, wasting 50 MB for
    # C's half hour and D's ten hours.
    assert floor.wastage_gbh == pytest.approx(COLD_A + 0.05 * 0.5 + 0.05 * 10)
    assert (floor.tasks, floor.underprovisioned, floor.failed_attempts) == (4, 0, 0)


def test_a_failure_is_spent_where_it_saves_most(tmp_path: Path) -> None:
    floor = clairvoyant_floor([_chain(tmp_path / "hand-001.json")], under_budget=0.25)
    # One failure allowed: 150 MB lets B fail for an hour (0.15 GB·h) and fit at 300 (0.1),
    # saving D's and C's 50 MB (0.525 GB·h).
    assert floor.wastage_gbh == pytest.approx(COLD_A + 0.15 + 0.1)
    assert (floor.underprovisioned, floor.failed_attempts) == (1, 1)


def test_input_sizes_tell_tasks_apart(tmp_path: Path) -> None:
    trace = _chain(tmp_path / "hand-001.json", inputs={"B": MB, "C": 2 * MB, "D": 3 * MB})
    assert clairvoyant_floor([trace], under_budget=0.0).wastage_gbh == pytest.approx(COLD_A)


def test_a_program_completed_in_an_earlier_run_is_not_a_cold_start(tmp_path: Path) -> None:
    first, second = _chain(tmp_path / "hand-001.json"), _chain(tmp_path / "hand-002.json")
    floor = clairvoyant_floor([first, second], under_budget=0.0)
    # The second run's A is sized with x known: its class (run 2, x) holds all four tasks.
    second_run = 0.1 * 1 + 0.05 * 0.5 + 0.05 * 10
    assert floor.wastage_gbh == pytest.approx(COLD_A + 0.05 * 0.5 + 0.05 * 10 + second_run)


def test_the_floor_is_below_every_method_that_stays_within_the_budget(tmp_path: Path) -> None:
    runs = [_chain(tmp_path / f"hand-00{i}.json") for i in (1, 2, 3)]
    floor = clairvoyant_floor(runs, under_budget=0.0)
    for name, outcome in evaluate(runs, baselines()).overall.items():
        if outcome.underprovisioned == 0:
            assert floor.wastage_gbh <= outcome.wastage_gbh + 1e-9, name


def test_leave_one_family_out_reports_each_familys_floor(tmp_path: Path) -> None:
    traces = []
    for family in ("one", "two"):
        (tmp_path / family).mkdir()
        traces += [_chain(tmp_path / family / f"hand-00{i}.json") for i in (1, 2)]
    result = leave_one_family_out(traces, grid=GRID[:2])
    assert [f.family for f in result.families] == ["one", "two"]
    for family in result.families:
        assert family.floor.wastage_gbh == pytest.approx(
            clairvoyant_floor(traces[:2], under_budget=0.005).wastage_gbh)
    assert result.overall().floor.tasks == 16
    assert "clairvoyant floor" in lofo_table(result)
    assert lofo_json(result)["families"]["one"]["clairvoyant_floor"]["tasks"] == 8
