"""`shadowflow report`: its numbers equal direct SQL over the same tables; charts; the demo end to
end at small scale."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.stack import LocalStack
from sinks.clickhouse import connect
from streams.forecasting.evaluation import evaluate
from streams.forecasting.sizing import DEFAULT_ALLOCATION, MaxSeen
from streams.traces.detection import score_detection
from tests.support import TRACES, WorkerProcess, free_port, settings_env, wait_for
from topology.report import (
    build_report,
    charts,
    parse_since,
    read_faults,
    recorded_runs,
    wastage_by_method,
)
from topology.settings import Settings

SMALL = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"
pytestmark = pytest.mark.skipif(not SMALL.exists(), reason=f"shared traces not at {TRACES}")


def _cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topology.cli", *args],
                          env={**os.environ, **settings_env(settings)}, capture_output=True,
                          text=True, timeout=timeout)


def test_report_numbers_equal_direct_sql(settings: Settings, tmp_path: Path,
                                         worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(feedback_grace_seconds=0.5, mirror_gap_seconds=2.0,
                            mirror_compare_wait_seconds=3.0).start()
    seed = random.randrange(10**6)
    faults_file = tmp_path / "faults.jsonl"
    # One fault per workflow, so each fault is visible on its own and the wait for recall 1.0
    # depends on no combination of faults.
    replayed = _cli(settings, "replay", str(SMALL), "--workflows", "3", "--seed", str(seed),
                    "--faults-per-workflow", "1", "--faults-out", str(faults_file))
    assert replayed.returncode == 0, replayed.stderr
    faults = read_faults(faults_file)
    client = connect(settings)
    prefix = f"replay-{seed}-"
    # A dropped completion leaves its action without feedback.
    dropped = sum(f.kind == "dropped_event" for f in faults)
    wait_for(lambda: client.execute(
        "SELECT count() FROM feedback FINAL WHERE startsWith(workflow_id, %(p)s)",
        {"p": prefix})[0][0] >= 3 * 43 - dropped, what="feedback of every workflow", timeout=90)
    wait_for(lambda: score_detection(faults, client.execute(
        "SELECT workflow_id, sequence FROM anomalies FINAL WHERE startsWith(workflow_id, %(p)s) "
        "AND kind IN ('STATE_DEVIATION', 'MISSING_EVENTS')", {"p": prefix}), 10).recall == 1.0,
        what="every fault detected", timeout=60)
    worker.stop()  # nothing writes while the two sides are read

    report = build_report(client, 0, faults)
    one = lambda sql: client.execute(sql)[0][0]  # noqa: E731
    assert sum(r["events"] for r in report["events"]) == one(
        "SELECT count() FROM workflow_events FINAL")
    assert sum(r["actions"] for r in report["forecasts"]) == one(
        "SELECT count() FROM feedback FINAL")
    assert sum(r["underprovisioned"] for r in report["forecasts"]) == one(
        "SELECT sum(underprovisioned) FROM feedback FINAL")
    assert sum(report["sources"].values()) == one(
        "SELECT count() FROM predictions FINAL WHERE predicted_next = 0")
    assert sum(r["count"] for r in report["reservations"] if r["op"] == "RESERVE") == one(
        "SELECT count() FROM reservations FINAL WHERE op = 'RESERVE'")
    by_severity = dict(client.execute("SELECT severity, count() FROM anomalies FINAL "
                                      "GROUP BY severity"))
    for severity, count in by_severity.items():
        assert sum(a["count"] for a in report["anomalies"] if a["severity"] == severity) == count
    mirror_anomalies = client.execute("SELECT workflow_id, sequence FROM anomalies FINAL "
                                      "WHERE kind IN ('STATE_DEVIATION', 'MISSING_EVENTS')")
    expected = score_detection(faults, mirror_anomalies, 10)
    assert report["detection"]["precision"] == expected.precision
    assert report["detection"]["recall"] == expected.recall == 1.0
    assert report["lead_time_ms"]["actions"] == one(
        "SELECT count() FROM feedback FINAL WHERE lead_time_ms >= 0")

    written = charts(report, tmp_path / "charts")
    assert [p.name for p in written] == ["forecast_vs_actual.png", "wastage_by_method.png",
                                         "anomalies_by_severity.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
               for p in written)


def test_since_takes_durations_and_dates() -> None:
    assert parse_since(None) == 0
    assert parse_since("2h", now=10_000.0) == (10_000 - 7200) * 1000
    assert parse_since("2026-11-21T08:00:00+00:00") == 1_795_248_000_000
    with pytest.raises(ValueError, match="give a duration ago"):
        parse_since("yesterday-ish")


def test_baselines_in_the_report_see_only_what_completed_before_each_start() -> None:
    gb = 10**9
    # (workflow, run, type, action, action type, peak, runtime s, live allocation)
    actuals = [("w", "r", "t", "a", "x", 1 * gb, 10.0, 2 * gb),
               ("w", "r", "t", "b", "x", 3 * gb, 10.0, 2 * gb),
               ("w", "r", "t", "c", "x", 1 * gb, 10.0, 4 * gb)]
    # b starts before a completes; c after both.
    started = [("w", "r", "a", 1_000, 0.0, 0), ("w", "r", "b", 6_000, 0.0, 0),
               ("w", "r", "c", 30_000, 0.0, 0)]
    [trace] = recorded_runs(actuals, started)
    assert [(t.task_id, t.start_s) for t in trace.tasks] == [("a", 0.0), ("b", 5.0), ("c", 29.0)]
    result = evaluate([trace], [MaxSeen()])
    first = {task: methods["max seen"] for (_, task), methods in result.allocations.items()}
    default = DEFAULT_ALLOCATION["memory"]
    assert first == {"a": default, "b": default, "c": 3 * gb}  # b never saw a's peak
    figures = wastage_by_method(actuals, started)
    assert figures["shadowflow (recorded)"]["underprovisioned_share"] == round(1 / 3, 6)
    assert set(figures) >= {"max seen", "VPA p90 + 15%", "shadowflow (recorded)"}
    # The floor starts a and b cold (nothing completed yet): a wastes 2 GiB - 1 GB for 10 s, b
    # fails at 2 GiB and fits at 4 GiB; c gets its own peak (a class of one).
    floor = figures["clairvoyant floor"]
    hours = 10 / 3600
    assert floor["wastage_gbh"] == pytest.approx(
        ((default - gb) + default + (2 * default - 3 * gb)) * hours / gb, abs=1e-6)
    assert floor["underprovisioned_share"] == round(1 / 3, 6)


@pytest.mark.integration
def test_demo_end_to_end_at_small_scale(tmp_path: Path) -> None:
    # The README's main job on a stack of its own (ports, folder), with one small trace.
    own = Settings().with_overrides(
        broker=f"127.0.0.1:{free_port()}", clickhouse_port=free_port(),
        stack_clickhouse_http_port=free_port(), stack_dir=tmp_path / "stack",
        web_port=free_port(), session_timeout_seconds=6.0)
    try:
        result = _cli(own, "demo", str(SMALL), "--json", str(tmp_path / "demo.json"),
                      timeout=400)
    finally:
        LocalStack(own).down(purge=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "stored 131 of 131 events" in out
    assert "precision 1.00, recall 1.00" in out
    assert "dead letters on shadow.deadletter: 2 of 2 malformed messages" in out
    assert "stopped the worker and the services the demo started" in out
    assert not any(s.pid for s in LocalStack(own).status())
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["detection"]["recall"] == 1.0
    assert sum(r["events"] for r in report["events"]) == 131
