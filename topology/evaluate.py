"""``shadowflow evaluate PATH... [--json FILE]``: the forecaster against the baselines on traces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streams.forecasting.evaluation import Evaluation, evaluate
from streams.forecasting.forecaster import Forecaster
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


def run_evaluation(paths: list[str], json_path: str | None = None) -> int:
    """Evaluate, print the table, optionally write the JSON; returns the exit code."""
    files = trace_files(paths)
    if not files:
        print("shadowflow evaluate: no trace files found", file=sys.stderr)
        return 2
    try:
        traces = [load_trace(p) for p in files]
    except TraceError as exc:
        print(f"shadowflow evaluate: {exc}", file=sys.stderr)
        return 2
    methods = [*baselines(), Forecaster()]
    result = evaluate(traces, methods, progress=_progress)
    print(file=sys.stderr)
    print(table(result, len(traces)))
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_json(), indent=2))
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


def _progress(done: int, total: int) -> None:
    print(f"\revaluating: {done}/{total} runs", end="", file=sys.stderr, flush=True)
