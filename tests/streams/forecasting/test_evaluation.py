"""The offline evaluation: metrics on a hand-computed trace, Nextflow traces, learning over runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.forecasting.evaluation import GB, evaluate, memory_outcome
from streams.forecasting.forecaster import Forecaster
from streams.forecasting.sizing import GIB, MaxSeen, UserRequest, min_waste_allocation
from streams.traces.formats import load_trace, parse_duration, parse_size
from streams.traces.schedule import schedule
from tests.support import TRACES

MB = 10**6


def _wfformat(path: Path, tasks: list[tuple[str, str, list[str], float, int]]) -> Path:
    """A minimal WfFormat file: (id, type, parents, runtime s, peak bytes) per task."""
    document = {"name": "hand", "workflow": {
        "specification": {"tasks": [{"id": i, "name": f"{t}_ID{n:06d}", "parents": p,
                                     "children": [], "inputFiles": [], "outputFiles": []}
                                    for n, (i, t, p, _, _) in enumerate(tasks)], "files": []},
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
