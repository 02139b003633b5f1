"""Deviation scoring: weights, missing variables on either side, tolerance and severity."""

from __future__ import annotations

import math

import pytest

from streams.mirror.definitions import DEFAULT, parse_definition
from streams.mirror.deviation import (
    MISSING_IN_MIRROR,
    MISSING_IN_PRIMARY,
    Comparison,
    score,
    score_many,
)

DEFINITION = parse_definition({
    "workflow_type": "t", "tolerance": 0.5, "missing_weight": 20,
    "weights": {"balance": 3.0, "item.*": 0.5}, "critical": ["status"]})


def test_numbers_by_weighted_difference_others_by_equality() -> None:
    d = score({"balance": 10.0, "item.a": 4, "note": "x", "flag": True},
              {"balance": 12.5, "item.a": 1, "note": "y", "flag": True}, DEFINITION)
    assert d.score == pytest.approx(3.0 * 2.5 + 0.5 * 3 + 1.0)
    assert [v.name for v in d.variables] == ["balance", "item.a", "note"]
    assert d.anomalous and d.severity == "MEDIUM"


def test_a_variable_missing_on_either_side_costs_the_fixed_weight() -> None:
    d = score({"a": 1, "only_primary": 2}, {"a": 1, "only_mirror": 3}, DEFINITION)
    statuses = {v.name: (v.status, v.primary, v.mirror, v.contribution) for v in d.variables}
    assert statuses == {"only_primary": (MISSING_IN_MIRROR, 2, None, 20.0),
                        "only_mirror": (MISSING_IN_PRIMARY, None, 3, 20.0)}
    assert d.score == 40.0 and d.severity == "HIGH"


def test_tolerance_critical_variables_and_types() -> None:
    assert not score({"balance": 1.1}, {"balance": 1.0}, DEFINITION).anomalous  # 0.3 <= 0.5
    critical = score({"status": "RUNNING"}, {"status": "FAILED"}, DEFINITION)
    assert critical.score == 1.0 and critical.severity == "HIGH"
    assert score({"x": True}, {"x": 1}, DEFAULT).score == 1.0  # a boolean is not a number
    assert score({"x": 1}, {"x": 1.0}, DEFAULT).score == 0.0
    assert score({"x": math.nan}, {"x": math.nan}, DEFAULT).score == 0.0


def test_many_at_once_equals_one_by_one() -> None:
    pairs = [Comparison({"balance": float(i), "n": "a"},
                        {"balance": 0.0, "n": "a" if i % 2 else "b"}, DEFINITION)
             for i in range(50)]
    together = score_many(pairs)
    alone = [score(p.primary, p.mirror, p.definition) for p in pairs]
    assert [(d.score, d.severity) for d in together] == [(d.score, d.severity) for d in alone]
