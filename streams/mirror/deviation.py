"""Deviation between the primary's state vector and the mirror's, scored many at a time.

For each variable: numbers (not booleans) contribute ``weight * |primary - mirror|``; other values
contribute ``weight`` when they differ; a variable present on one side only contributes the
definition's fixed ``missing_weight``. The score is the sum. A score above the definition's
tolerance is an anomaly, with a severity from the score thresholds, lifted to at least HIGH when a
critical variable is affected. Equal values are skipped in Python; the numeric differences of a
whole batch of comparisons are computed in one numpy pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from schemas.records import Value, is_number
from streams.mirror.definitions import WorkflowDefinition

DIFFERENT = "DIFFERENT"
MISSING_IN_PRIMARY = "MISSING_IN_PRIMARY"
MISSING_IN_MIRROR = "MISSING_IN_MIRROR"
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class VariableDeviation:
    """One variable that differs, with both sides' values (``None`` where missing)."""

    name: str
    status: str
    primary: Value
    mirror: Value
    weight: float
    contribution: float


@dataclass(frozen=True, slots=True)
class Deviation:
    """The outcome of one comparison."""

    score: float
    severity: str
    anomalous: bool
    variables: tuple[VariableDeviation, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    """One pair of state vectors to compare, under a definition."""

    primary: Mapping[str, Value]
    mirror: Mapping[str, Value]
    definition: WorkflowDefinition


def _same(a: object, b: object) -> bool:
    if type(a) is type(b):
        return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
    return is_number(a) and is_number(b) and a == b


def score_many(comparisons: Sequence[Comparison]) -> list[Deviation]:
    """Score every comparison; the result is in the same order."""
    index: list[int] = []       # which comparison each numeric difference belongs to
    primary_values: list[float] = []
    mirror_values: list[float] = []
    weights: list[float] = []
    fixed = np.zeros(len(comparisons))  # contributions not needing arithmetic
    found: list[list[tuple[str, str, object, object, float, int]]] = []
    for i, comparison in enumerate(comparisons):
        definition = comparison.definition
        primary, mirror = comparison.primary, comparison.mirror
        differing: list[tuple[str, str, object, object, float, int]] = []
        for name in primary.keys() | mirror.keys():
            p = primary.get(name, _ABSENT)
            m = mirror.get(name, _ABSENT)
            if p is m or _same(p, m):
                continue
            if p is _ABSENT or m is _ABSENT:
                weight = definition.missing_weight
                status = MISSING_IN_PRIMARY if p is _ABSENT else MISSING_IN_MIRROR
                fixed[i] += weight
                differing.append((name, status, p, m, weight, -1))
            elif is_number(p) and is_number(m):
                weight = definition.weight(name)
                differing.append((name, DIFFERENT, p, m, weight, len(index)))
                index.append(i)
                primary_values.append(float(p))  # type: ignore[arg-type]
                mirror_values.append(float(m))  # type: ignore[arg-type]
                weights.append(weight)
            else:
                weight = definition.weight(name)
                fixed[i] += weight
                differing.append((name, DIFFERENT, p, m, weight, -1))
        found.append(differing)

    contributions = (np.asarray(weights) * np.abs(np.asarray(primary_values)
                                                  - np.asarray(mirror_values)))
    scores = fixed + np.bincount(np.asarray(index, dtype=np.int64), weights=contributions,
                                 minlength=len(comparisons))
    return [_deviation(comparison, float(score), differing, contributions)
            for comparison, score, differing in zip(comparisons, scores, found, strict=True)]


def score(primary: Mapping[str, Value], mirror: Mapping[str, Value],
          definition: WorkflowDefinition) -> Deviation:
    """Score one comparison."""
    return score_many([Comparison(primary, mirror, definition)])[0]


def _deviation(comparison: Comparison, total: float,
               differing: list[tuple[str, str, object, object, float, int]],
               contributions: np.ndarray) -> Deviation:
    definition = comparison.definition
    variables = tuple(sorted(
        (VariableDeviation(
            name, status, None if p is _ABSENT else p, None if m is _ABSENT else m,  # type: ignore[arg-type]
            weight, float(contributions[at]) if at >= 0 else weight)
         for name, status, p, m, weight, at in differing),
        key=lambda v: (-v.contribution, v.name)))
    critical = any(definition.is_critical(v.name) for v in variables)
    anomalous = total > definition.tolerance
    severity = definition.severity_of(total, critical) if anomalous else "INFO"
    return Deviation(total, severity, anomalous, variables)
