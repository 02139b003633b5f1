"""Choosing the forecaster's parameters without fooling ourselves: leave one family out.

A family is a trace's folder (``blast``, ``srasearch``, ``montage``, ``nextflow`` for the nf-core
pipelines). Every family is evaluated on its own, from nothing, in the chosen run order. The
forecaster's parameters are chosen from ``GRID`` by ``objective`` — on all families (in-sample)
and on all families but one (left-out), the left-out family then being scored with what was
chosen without it. The baselines have no parameters to choose: their figures are the same in
both columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from streams.forecasting.evaluation import Outcome, evaluate, order_runs
from streams.forecasting.floor import clairvoyant_floor
from streams.forecasting.forecaster import Forecaster
from streams.forecasting.sizing import baselines
from streams.traces.formats import Trace

GRID: tuple[dict[str, Any], ...] = tuple(
    {"failure_cost_gbh": c, "min_samples": n, "small_sample_margin": m, "borrowed_headroom": b}
    for c, n, m, b in product((math.inf, 4.0, 1.0, 0.25), (3, 1), (1.0, 0.5), (0.5, 0.0)))
"""The forecaster's parameters to choose from, the most cautious first: where several are
equally good on the families chosen on, the first (most cautious) is taken."""

UNDER_WEIGHT = 0.5
"""What a percentage point of tasks under-provisioned at first attempt costs in ``objective``,
in units of the best baseline's wastage."""

UNDER_TARGET = 0.5
OVER_TARGET_WEIGHT = 5.0
"""What each percentage point above ``UNDER_TARGET`` (the target: at most 0.5% of tasks
under-provisioned at first attempt) costs on top, in the same units."""


def family_of(trace: Trace) -> str:
    """A trace's family: the folder it is in."""
    return Path(trace.path).parent.name


def objective(outcome: Outcome, best_baseline_gbh: float) -> float:
    """Lower is better: wastage relative to the family's best baseline, plus ``UNDER_WEIGHT``
    per percentage point under-provisioned and ``OVER_TARGET_WEIGHT`` more per point beyond
    ``UNDER_TARGET``."""
    ratio = outcome.wastage_gbh / best_baseline_gbh if best_baseline_gbh > 0 else 1.0
    points = 100 * outcome.underprovisioned_share
    return ratio + UNDER_WEIGHT * points + OVER_TARGET_WEIGHT * max(0.0, points - UNDER_TARGET)


@dataclass
class FamilyResult:
    """One family's figures: every baseline, and the forecaster with parameters chosen in-sample
    and without the family."""

    family: str
    baselines: dict[str, Outcome]
    in_sample: Outcome
    left_out: Outcome
    in_sample_params: dict[str, Any]
    left_out_params: dict[str, Any]
    floor: Outcome = field(default_factory=Outcome)
    """What a clairvoyant sizing from the same knowledge would waste (``floor``)."""

    @property
    def best_baseline(self) -> str:
        """The baseline with the lowest wastage."""
        return min(self.baselines, key=lambda name: self.baselines[name].wastage_gbh)


@dataclass
class Lofo:
    """Leave-one-family-out results in one run order."""

    order: str
    seed: int
    families: list[FamilyResult] = field(default_factory=list)

    def overall(self) -> FamilyResult:
        """All families summed (each family's forecaster with its own choices)."""
        total = FamilyResult("overall", {}, Outcome(), Outcome(), {}, {})
        for result in self.families:
            for name, outcome in result.baselines.items():
                total.baselines.setdefault(name, Outcome()).add(outcome)
            total.in_sample.add(result.in_sample)
            total.left_out.add(result.left_out)
            total.floor.add(result.floor)
        return total


def leave_one_family_out(traces: Sequence[Trace], order: str = "name", seed: int = 0,
                         grid: Sequence[dict[str, Any]] = GRID,
                         progress: Callable[[str], None] | None = None) -> Lofo:
    """Evaluate every family with memory peaks alone; choose the forecaster's parameters in
    sample and without each family (see the module docstring)."""
    families: dict[str, list[Trace]] = {}
    for trace in traces:
        if any(t.memory_bytes is not None for t in trace.tasks):
            families.setdefault(family_of(trace), []).append(trace)
    scored_baselines: dict[str, dict[str, Outcome]] = {}
    scored: dict[str, list[Outcome]] = {}
    floors: dict[str, Outcome] = {}
    for family, members in sorted(families.items()):
        if progress:
            progress(family)
        runs = order_runs(members, order, seed)
        scored_baselines[family] = evaluate(runs, baselines()).overall
        floors[family] = clairvoyant_floor(runs, UNDER_TARGET / 100)
        scored[family] = [evaluate(runs, [Forecaster(**params)]).overall["shadowflow"]
                          for params in grid]
    best = {f: min(o.wastage_gbh for o in scored_baselines[f].values()) for f in families}

    def choose(among: list[str]) -> int:
        return min(range(len(grid)), key=lambda i: sum(
            objective(scored[f][i], best[f]) for f in among) / len(among))

    result = Lofo(order, seed)
    everything = choose(sorted(families))
    for family in sorted(families):
        others = [f for f in sorted(families) if f != family]
        without = choose(others) if others else everything
        result.families.append(FamilyResult(
            family, scored_baselines[family], scored[family][everything], scored[family][without],
            dict(grid[everything]), dict(grid[without]), floors[family]))
    return result
