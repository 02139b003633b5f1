"""The offline evaluation: metrics on a hand-computed trace, Nextflow traces, learning over runs."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from pathlib import Path

import pytest

from streams.forecasting.evaluation import GB, evaluate, memory_outcome
from streams.forecasting.forecaster import Forecaster
from streams.forecasting.sizing import (
    GIB,
    DecayingHistogramP90,
    LastPlus15,
    MaxSeen,
    MinWasteFirstAllocation,
    TaskContext,
    UserRequest,
    WittLinearRegression,
    baselines,
    min_waste_allocation,
)
from streams.traces.formats import Trace, load_trace, parse_duration, parse_size
from streams.traces.schedule import schedule
from tests.support import TRACES

MB = 10**6


def _wfformat(path: Path, tasks: list[tuple[str, str, list[str], float, int]],
              inputs: dict[str, int] | None = None) -> Path:
    """A minimal WfFormat file: (id, type, parents, runtime s, peak bytes) per task; ``inputs``:
    the size of each task's one input file, by task id."""
    inputs = inputs or {}
    document = {"name": "hand", "workflow": {
        "specification": {"tasks": [{"id": i, "name": f"{t}_ID{n:06d}", "parents": p,
                                     "children": [], "inputFiles": [f"in-{i}"] if i in inputs
                                     else [], "outputFiles": []}
                                    for n, (i, t, p, _, _) in enumerate(tasks)],
                          "files": [{"id": f"in-{i}", "sizeInBytes": b}
                                    for i, b in inputs.items()]},
        "execution": {"makespanInSeconds": 0, "executedAt": "2020-01-01T00:00:00+00:00",
                      "tasks": [{"id": i, "runtimeInSeconds": r, "avgCPU": 100.0,
                                 "memoryInBytes": m, "command": {"program": t}}
                                for i, t, _, r, m in tasks],
                      "machines": [{"nodeName": "n", "cpu": {"coreCount": 1}}]}}}
    path.write_text(json.dumps(document))
    return path


def test_metrics_on_a_hand_computed_trace(tmp_path: Path) -> None:
    # One slot, so A, B, C run one after another; all of type "x".
    trace = load_trace(_wfformat(tmp_path / "hand-001.json", [
        ("A", "x", [], 3600.0, 100 * MB), ("B", "x", ["A"], 3600.0, 200 * MB),
        ("C", "x", ["B"], 1800.0, 150 * MB)]))
    result = evaluate([trace], [MaxSeen(), UserRequest()])
    seen = result.overall["max seen"]
    # A: nothing seen, the 2 GiB default: (2 GiB - 100 MB) x 1 h.
    # B: 100 MB (A's peak) fails for an hour, the retry at 200 MB fits exactly: 0.1 GB·h.
    # C: 200 MB for a 150 MB peak, half an hour: 0.025 GB·h.
    expected = (2 * GIB - 100 * MB) / GB + 0.1 + 0.025
    assert seen.wastage_gbh == pytest.approx(expected)
    assert (seen.underprovisioned, seen.tasks, seen.failed_attempts) == (1, 3, 1)
    usage = 0.1 + 0.2 + 0.075
    assert seen.maq == pytest.approx(usage / (usage + expected))
    request = result.overall["user request"]
    assert request.wastage_gbh == pytest.approx(
        (2 * GIB - 100 * MB) / GB + (2 * GIB - 200 * MB) / GB + (2 * GIB - 150 * MB) / GB / 2)
    assert request.underprovisioned == 0
    assert result.to_json()["overall"]["max seen"]["tasks"] == 3


def _hand_trace(tmp_path: Path) -> Trace:
    """A, B, C of type "x" one after another (one slot): peaks 100, 200, 150 MB for 1, 1 and
    0.5 h, inputs of 1, 2 and 1.6 MB."""
    return load_trace(_wfformat(tmp_path / "hand-001.json", [
        ("A", "x", [], 3600.0, 100 * MB), ("B", "x", ["A"], 3600.0, 200 * MB),
        ("C", "x", ["B"], 1800.0, 150 * MB)], inputs={"A": MB, "B": 2 * MB, "C": 1_600_000}))


def _vpa_bucket_end(i: int) -> float:
    """The end of the VPA memory histogram's bucket ``i``: buckets start at 10 MB x (1.05^i - 1)
    / 0.05, so the end of ``i`` is the start of ``i + 1``."""
    return 1e7 * (1.05 ** (i + 1) - 1) / 0.05


def test_the_baselines_by_hand(tmp_path: Path) -> None:
    result = evaluate([_hand_trace(tmp_path)], baselines())
    first = (2 * GIB - 100 * MB) / GB  # A: nothing known anywhere, the 2 GiB default, 1 h
    waste = {name: o.wastage_gbh - first for name, o in result.overall.items()}
    # last + 15%: B gets 115 MB, fails (0.115 GB·h), fits at 230 (0.03); C 230 for 150, 0.5 h.
    assert waste["last + 15%"] == pytest.approx(0.115 + 0.03 + 0.08 / 2)
    # VPA: A's 100 MB falls in bucket floor(ln(1e8 x 0.05 / 1e7 + 1) / ln 1.05) = 8; the 90th
    # percentile is that bucket's end (110.27 MB), plus 15%. B fails at 126.8 MB and fits at
    # 253.6. With B's 200 MB (bucket 14) the 90th percentile is bucket 14's end, 215.8 MB.
    b = _vpa_bucket_end(8) * 1.15
    c = _vpa_bucket_end(14) * 1.15
    assert math.floor(math.log(1e8 * 0.05 / 1e7 + 1) / math.log(1.05)) == 8
    assert math.floor(math.log(2e8 * 0.05 / 1e7 + 1) / math.log(1.05)) == 14
    assert waste["VPA p90 + 15%"] == pytest.approx((b + (2 * b - 200 * MB)) / GB
                                                   + (c - 150 * MB) / GB / 2)
    # Tovar: B from A alone, 100 MB, fails and fits at 200. C: allocating 100 or 200 wastes the
    # same over A and B (100 MB·h), the smaller is taken: fails (0.05), fits at 200 (0.025).
    assert waste["Tovar min-waste"] == pytest.approx(0.1 + 0.05 + 0.025)
    # Witt: B from one input size, the largest peak (100 MB): fails, fits at 200. C: the line
    # through (1 MB, 100 MB) and (2 MB, 200 MB), no residual: 160 MB for 1.6 MB, 0.5 h.
    assert waste["Witt LR + offset"] == pytest.approx(0.1 + 0.01 / 2)
    assert result.overall["Witt LR + offset"].underprovisioned == 1  # B only


def test_every_method_may_borrow_from_another_configuration_or_none_may(tmp_path: Path) -> None:
    other = load_trace(_wfformat(tmp_path / "other-001.json", [("D", "x", [], 3600.0, 120 * MB)]))
    methods = [MaxSeen(), LastPlus15(), DecayingHistogramP90(), MinWasteFirstAllocation(),
               WittLinearRegression(), Forecaster()]
    result = evaluate([_hand_trace(tmp_path), other], methods)
    run = {m: o for m, o in result.per_file[str(other.path)].items()}
    assert run["max seen"].wastage_gbh == pytest.approx(0.08)  # 200 MB from "hand", 1 h
    assert run["last + 15%"].wastage_gbh == pytest.approx(0.1725 - 0.12)  # 150 MB + 15%
    assert run["Tovar min-waste"].wastage_gbh < (2 * GIB - 120 * MB) / GB
    assert run["shadowflow"].wastage_gbh < (2 * GIB - 120 * MB) / GB
    alone = evaluate([_hand_trace(tmp_path), other],
                     [*baselines(borrow=False), Forecaster(borrow=False)])
    default = (2 * GIB - 120 * MB) / GB
    assert all(o.wastage_gbh == pytest.approx(default)
               for o in alone.per_file[str(other.path)].values())


def test_a_task_is_sized_from_what_is_known_before_it_starts(tmp_path: Path) -> None:
    known = {"workflow_type", "run_id", "action_type", "attempt", "input_bytes", "order",
             "requested_memory", "now_s"}
    assert {f.name for f in fields(TaskContext)} == known
    trace = load_trace(_wfformat(tmp_path / "leak-001.json", [
        (f"T{i}", "x", [f"T{i - 1}"] if i else [], 600.0 + 60 * i, (100 + 10 * i) * MB)
        for i in range(12)], inputs={f"T{i}": (i + 1) * MB for i in range(12)}))
    before = evaluate([trace], [*baselines(), Forecaster(min_samples=1)]).allocations
    # The sixth task's peak, runtime and what it read while running, changed by a lot.
    tasks = list(trace.tasks)
    tasks[5] = replace(tasks[5], memory_bytes=5 * GIB, runtime_s=9999.0, read_bytes=10**12)
    after = evaluate([replace(trace, tasks=tuple(tasks))],
                     [*baselines(), Forecaster(min_samples=1)]).allocations
    key = (f"{trace.name}#0", "T5")
    assert after[key] == before[key]
    later = (f"{trace.name}#0", "T6")  # the change is learnt once the task completed
    assert after[later] != before[later]


def test_a_failed_attempt_is_retried_at_double_and_wastes_its_allocation() -> None:
    # 100 MB for a 350 MB peak: fails at 100 and 200, fits at 400 (50 MB over), for 1 h.
    assert memory_outcome(100 * MB, 350 * MB, 3600) == (pytest.approx(0.35), 2)


def test_min_waste_first_allocation_by_hand() -> None:
    # Peaks 1 and 10, 1 s each. Allocating 1: the 10 fails at 1, 2, 4 and 8 (15 wasted) and
    # fits at 16 (6 over): 21. Allocating 10: 9 over for the 1, nothing for the 10: 9.
    assert min_waste_allocation([(1.0, 1.0), (10.0, 1.0)]) == 10.0
    # Ten peaks of 1 and one of 10: allocating 1 wastes 21, allocating 10 wastes 90.
    assert min_waste_allocation([(1.0, 1.0)] * 10 + [(10.0, 1.0)]) == 1.0


NEXTFLOW = "\n".join("\t".join(row) for row in [
    ["task_id", "hash", "native_id", "process", "name", "status", "exit", "submit", "start",
     "complete", "realtime", "%cpu", "peak_rss", "memory", "rchar", "wchar"],
    ["1", "ab/cdef12", "1", "FASTQC", "FASTQC (s1)", "COMPLETED", "0",
     "2023-03-21 11:10:20.100", "2023-03-21 11:10:21.000", "2023-03-21 11:11:21.000", "1m",
     "150.5%", "512 MB", "2 GB", "1.5 GB", "10 MB"],
    ["2", "ab/cdef13", "2", "FASTQC", "FASTQC (s2)", "FAILED", "1", "2023-03-21 11:10:20.200",
     "2023-03-21 11:10:22.000", "-", "-", "-", "-", "2 GB", "-", "-"],
    ["3", "ab/cdef14", "3", "ALIGN", "ALIGN (s1)", "COMPLETED", "0", "2023-03-21 11:11:30.000",
     "2023-03-21 11:11:31.500", "2023-03-21 12:12:33.500", "1h 1m 2s", "98%", "3.5 GB",
     "4 GB", "2 GB", "1 GB"],
]) + "\n"


def test_nextflow_trace_files_are_read_with_their_units(tmp_path: Path) -> None:
    path = tmp_path / "rnaseq-trace.txt"
    path.write_text(NEXTFLOW)
    trace = load_trace(path)
    assert [t.task_type for t in trace.tasks] == ["FASTQC", "ALIGN"]  # FAILED row left out
    fastqc, align = trace.tasks
    assert fastqc.runtime_s == 60.0 and align.runtime_s == 3662.0
    assert fastqc.memory_bytes == 512 * 1024**2 and fastqc.requested_memory_bytes == 2 * 1024**3
    assert fastqc.cpu_cores == pytest.approx(1.505)
    assert (fastqc.start_s, align.start_s) == (0.0, 70.5)
    assert [s.start_s for s in schedule(trace)] == [0.0, 70.5]  # real start times
    # Every method may start from the user's request where the trace has one.
    assert evaluate([trace], [UserRequest()]).overall["user request"].wastage_gbh == (
        pytest.approx((2 * 1024**3 - 512 * 1024**2) / GB / 60 + (4 - 3.5) * 1024**3 / GB
                      * 3662 / 3600))


@pytest.mark.parametrize(("text", "value"), [("1.5 GB", int(1.5 * 1024**3)), ("0", 0),
                                             ("-", None), ("10 KB", 10240)])
def test_sizes(text: str, value: int | None) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("1h 2m 3s", 3723.0), ("350ms", 0.35),
                                             ("12.5s", 12.5), ("4200", 4.2), ("-", None)])
def test_durations(text: str, value: float | None) -> None:
    assert parse_duration(text) == (None if value is None else pytest.approx(value))


MEDIUM = sorted((TRACES / "makeflow" / "blast").glob("blast-chameleon-medium-*.json"))


@pytest.mark.skipif(not MEDIUM, reason=f"shared traces not found at {TRACES}")
def test_a_repeated_workflow_is_predicted_better_on_later_runs() -> None:
    result = evaluate([load_trace(p) for p in MEDIUM], [Forecaster()])
    per_run = [outcomes["shadowflow"] for outcomes in result.per_file.values()]
    first, later = per_run[0], per_run[1:]
    waste_per_task = [o.wastage_gbh / o.tasks for o in per_run]
    # The first run starts from nothing (the default); later runs from what was learned.
    assert all(w < waste_per_task[0] / 2 for w in waste_per_task[1:]), waste_per_task
    assert sum(o.underprovisioned for o in later) <= 0.005 * sum(o.tasks for o in later) + 1
    assert first.maq < min(o.maq for o in later)
