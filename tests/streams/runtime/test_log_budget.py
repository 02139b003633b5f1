"""The log budget: a recurring message is logged a few times per window and counted otherwise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.runtime.log_budget import LogBudget


def test_the_first_lines_of_a_window_pass_and_the_rest_are_counted() -> None:
    budget = LogBudget(per_window=2, window_ms=1_000)
    assert [budget.admit("pool", t) for t in (0, 10, 20, 30)] == [0, 0, None, None]
    # A new window: the next line passes and says how many were held back before it.
    assert budget.admit("pool", 1_000) == 2
    assert budget.admit("pool", 1_001) == 0
    assert budget.admit("pool", 1_002) is None


def test_each_key_has_a_budget_of_its_own() -> None:
    budget = LogBudget(per_window=1, window_ms=1_000)
    assert budget.admit(("RESERVATION_FAILED", "MEDIUM"), 0) == 0
    assert budget.admit(("RESERVATION_FAILED", "MEDIUM"), 1) is None
    assert budget.admit(("STATE_DEVIATION", "HIGH"), 2) == 0


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=300),
       st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=2_000))
def test_every_line_is_either_logged_or_counted_in_a_later_line(
        gaps: list[int], per_window: int, window_ms: int) -> None:
    budget = LogBudget(per_window=per_window, window_ms=window_ms)
    now, logged, reported, pending = 0, 0, 0, 0
    starts: list[int] = []
    for gap in gaps:
        now += gap
        held = budget.admit("k", now)
        if held is None:
            pending += 1
            continue
        logged += 1
        reported += held
        starts.append(now)
        assert held == pending
        pending = 0
    assert logged + reported + pending == len(gaps)
    # Windows follow one another, so any span shorter than a window holds at most two
    # windows' worth of lines.
    for index, start in enumerate(starts):
        assert len([t for t in starts[index:] if t - start < window_ms]) <= 2 * per_window
