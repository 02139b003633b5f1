"""``shadowflow evaluate PATH... [--order name|size|random] [--seed N] [--lofo] [--json FILE]``:
the forecaster against the baselines on traces, optionally leaving one family out at a time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streams.forecasting.evaluation import Evaluation, Outcome, evaluate, order_runs
from streams.forecasting.floor import NAME as FLOOR
from streams.forecasting.forecaster import Forecaster
from streams.forecasting.selection import FamilyResult, Lofo, leave_one_family_out
from streams.forecasting.sizing import baselines
from streams.traces.formats import TraceError, load_trace


def trace_files(paths: list[str]) -> list[Path]:
    """The files named, and the trace files inside folders named (sorted, recursively):
    ``*.json`` (WfFormat) and ``*trace*.txt``/``*.tsv`` (Nextflow)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and (
                p.suffix == ".json" or p.suffix == ".tsv" or
                (p.suffix == ".txt" and "trace" in p.name)))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such trace file or folder: {path}")
    return found


TARGET_UNDER = 0.005
TARGET_RATIO = 0.75
"""The targets: at most 0.5% of tasks under-provisioned at first attempt, and at most 0.75 times
the wastage of the best baseline."""


def run_evaluation(paths: list[str], json_path: str | None = None,
                   orders: list[str] | None = None, seed: int = 0, lofo: bool = False) -> int:
    """Evaluate (or leave one family out, in each of ``orders``), print the tables, optionally
    write the JSON; returns the exit code."""
    files = trace_files(paths)
    if not files:
        print("shadowflow evaluate: no trace files found", file=sys.stderr)
        return 2
    try:
        traces = [load_trace(p) for p in files]
    except TraceError as exc:
        print(f"shadowflow evaluate: {exc}", file=sys.stderr)
        return 2
    if lofo:
        results = [leave_one_family_out(traces, order, seed, progress=_family_progress)
                   for order in orders or ["name", "random"]]
        print(file=sys.stderr)
        print("\n\n".join(lofo_table(r) for r in results))
        document: dict[str, object] = {r.order: lofo_json(r) for r in results}
    else:
        order = (orders or ["name"])[0]
        runs = order_runs(traces, order, seed)
        result = evaluate(runs, [*baselines(), Forecaster()], progress=_progress)
        print(file=sys.stderr)
        print(f"run order: {order}" + (f" (seed {seed})" if order == "random" else ""))
        print(table(result, len(traces)))
        document = result.to_json()
    if json_path:
        Path(json_path).write_text(json.dumps(document, indent=2))
        print(f"\nwrote {json_path}")
    return 0


def table(result: Evaluation, runs: int) -> str:
    """The overall figures as a terminal table."""
    lines = [f"{runs} runs, {next(iter(result.overall.values())).tasks} tasks with a memory "
             "peak; each task sized before it starts from what completed before",
             f"{'method':<18} {'wastage GB·h':>13} {'under-prov.':>12} {'MAQ':>6} "
             f"{'failed':>7} {'CPU slack':>10}"]
    for name, o in result.overall.items():
        lines.append(f"{name:<18} {o.wastage_gbh:>13.2f} {o.underprovisioned_share:>11.2%} "
                     f"{o.maq:>6.3f} {o.failed_attempts:>7} {o.cpu_slack:>9.1%}")
    for name, o in result.overall.items():
        if o.calibration:
            lines.append(f"\ncalibration of {name}: how often the memory allocation covered the "
                         "peak, per stated confidence")
            lines.append(f"{'confidence':>12} {'tasks':>7} {'covered':>8}")
            for bucket, (n, covered) in sorted(o.calibration.items()):
                lines.append(f"{bucket:>5.1f}-{bucket + 0.1:<5.1f} {n:>7} {covered / n:>8.2%}")
    return "\n".join(lines)


def lofo_table(result: Lofo) -> str:
    """Per family with memory peaks, then overall: every baseline, the forecaster with its
    parameters chosen in-sample and without the family, against the targets, and the
    clairvoyant floor (``streams.forecasting.floor``): whether the wastage target is within
    reach of sizing from what is known at sizing time at all."""
    seed = f" (seed {result.seed})" if result.order == "random" else ""
    lines = [f"leave one family out, run order: {result.order}{seed}; each family evaluated on "
             "its own from nothing",
             f"{'family':<10} {'method':<24} {'wastage GB·h':>13} {'under-prov.':>12} "
             f"{'x best':>7}  target"]
    for family in [*result.families, result.overall()]:
        best = family.baselines[family.best_baseline].wastage_gbh
        rows: list[tuple[str, Outcome]] = [*family.baselines.items(),
                                           ("shadowflow in-sample", family.in_sample),
                                           ("shadowflow left-out", family.left_out),
                                           (FLOOR, family.floor)]
        for index, (name, outcome) in enumerate(rows):
            ratio = outcome.wastage_gbh / best if best else float("nan")
            mark = "  best" if name == family.best_baseline else ""
            if name.startswith("shadowflow"):
                mark = "  met" if _meets(outcome, best) else "  not met"
            if name == FLOOR:
                mark = ("  target within reach" if outcome.wastage_gbh <= TARGET_RATIO * best
                        else "  target out of reach")
            lines.append(f"{family.family if index == 0 else '':<10} {name:<24} "
                         f"{outcome.wastage_gbh:>13.2f} {outcome.underprovisioned_share:>11.2%} "
                         f"{ratio:>7.2f}{mark}")
        if family.left_out_params:
            lines.append(f"{'':<10} chosen in-sample: {_params(family.in_sample_params)}; "
                         f"without {family.family}: {_params(family.left_out_params)}")
    return "\n".join(lines)


def lofo_json(result: Lofo) -> dict[str, object]:
    """The leave-one-family-out figures as JSON."""
    def one(family: FamilyResult) -> dict[str, object]:
        return {"baselines": {n: o.to_json() for n, o in family.baselines.items()},
                "best_baseline": family.best_baseline,
                "in_sample": family.in_sample.to_json(), "left_out": family.left_out.to_json(),
                "in_sample_params": family.in_sample_params,
                "left_out_params": family.left_out_params,
                "clairvoyant_floor": family.floor.to_json()}
    return {"seed": result.seed, "families": {f.family: one(f) for f in result.families},
            "overall": one(result.overall())}


def _meets(outcome: Outcome, best_gbh: float) -> bool:
    return (outcome.underprovisioned_share <= TARGET_UNDER
            and outcome.wastage_gbh <= TARGET_RATIO * best_gbh)


def _params(params: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _family_progress(family: str) -> None:
    print(f"\rleaving one family out: {family:<20}", end="", file=sys.stderr, flush=True)


def _progress(done: int, total: int) -> None:
    print(f"\revaluating: {done}/{total} runs", end="", file=sys.stderr, flush=True)
