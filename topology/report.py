"""``shadowflow report``: what the pipeline predicted, reserved and detected, from ClickHouse.

Every figure comes from one query in ``QUERIES`` (the README lists them), run over the rows whose
time is at or after ``--since``. Printed as tables, written as JSON (``--json``) and as PNG charts
(``--out``). Given the faults file of a replay (``--faults``), detection is scored: precision and
recall of the mirror's anomalies against the injected faults (``streams.traces.detection``).

"Wastage by method" scores the allocations the forecaster really made beside the baselines run
like for like, through ``shadowflow evaluate``'s protocol: each action sized when it started,
from what completed before (its input size and request as scheduled), runs taken one after
another in the order they started.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from clickhouse_driver import Client

from schemas.records import SEVERITIES
from sinks.clickhouse import connect
from streams.forecasting.evaluation import evaluate, memory_outcome
from streams.forecasting.floor import NAME as FLOOR
from streams.forecasting.floor import clairvoyant_floor
from streams.forecasting.sizing import MINIMUM_ALLOCATION, baselines
from streams.traces.detection import score_detection
from streams.traces.faulty_primary import Fault
from streams.traces.formats import Trace, TraceTask
from topology.settings import Settings

QUERIES: dict[str, str] = {
    "events": (
        "SELECT workflow_type, uniqExact(workflow_id) AS workflows, count() AS events, "
        "countIf(kind = 'ACTION_COMPLETED') AS actions, min(timestamp_ms), max(timestamp_ms) "
        "FROM workflow_events FINAL WHERE timestamp_ms >= %(since)s "
        "GROUP BY workflow_type ORDER BY workflow_type"),
    "forecasts": (
        "SELECT action_type, count() AS actions, avg(predicted_memory_bytes), "
        "avg(actual_memory_bytes), sum(underprovisioned), "
        "sum(actual_memory_bytes * runtime_s) / sum(predicted_memory_bytes * runtime_s) "
        "FROM feedback FINAL WHERE recorded_ms >= %(since)s "
        "GROUP BY action_type ORDER BY actions DESC, action_type"),
    "sources": (
        "SELECT source, count() FROM predictions FINAL "
        "WHERE issued_ms >= %(since)s AND predicted_next = 0 GROUP BY source ORDER BY source"),
    "reservations": (
        "SELECT op, reason, count() FROM reservations FINAL WHERE issued_ms >= %(since)s "
        "GROUP BY op, reason ORDER BY op, reason"),
    "lead_times": (
        "SELECT count(), quantile(0.5)(lead_time_ms), quantile(0.9)(lead_time_ms), "
        "max(lead_time_ms) FROM feedback FINAL "
        "WHERE recorded_ms >= %(since)s AND lead_time_ms >= 0"),
    "anomalies": (
        "SELECT kind, severity, count() FROM anomalies FINAL WHERE detected_ms >= %(since)s "
        "GROUP BY kind, severity ORDER BY kind, severity"),
    "detected": (
        "SELECT workflow_id, sequence FROM anomalies FINAL WHERE detected_ms >= %(since)s "
        "AND kind IN ('STATE_DEVIATION', 'MISSING_EVENTS')"),
    "actuals": (
        "SELECT workflow_id, run_id, workflow_type, action_id, action_type, actual_memory_bytes, "
        "runtime_s, predicted_memory_bytes FROM feedback FINAL WHERE recorded_ms >= %(since)s "
        "ORDER BY recorded_ms, workflow_id, action_id"),
    "action_times": (
        "SELECT workflow_id, run_id, action_id, maxIf(timestamp_ms, kind = 'ACTION_STARTED'), "
        "max(attributes.value[indexOf(attributes.key, 'input_bytes')]), "
        "max(ifNull(declared_memory_bytes, 0)) FROM workflow_events FINAL "
        "WHERE kind IN ('ACTION_SCHEDULED', 'ACTION_STARTED') AND workflow_id IN "
        "(SELECT workflow_id FROM feedback "
        "FINAL WHERE recorded_ms >= %(since)s) GROUP BY workflow_id, run_id, action_id"),
}

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ReportError(ValueError):
    """A report argument cannot be used; the message says why."""


def parse_since(text: str | None, now: float | None = None) -> int:
    """Epoch milliseconds from ``30m``/``2h``/``1d`` (ago) or an ISO date-time; 0 for none."""
    if not text:
        return 0
    now = time.time() if now is None else now
    match = _RELATIVE.match(text.strip())
    if match:
        return int((now - float(match.group(1)) * _SECONDS[match.group(2)]) * 1000)
    try:
        return int(datetime.fromisoformat(text.strip()).timestamp() * 1000)
    except ValueError:
        raise ReportError(f"--since {text!r}: give a duration ago (30m, 2h, 1d) or a date-time "
                          "(2026-11-21 08:00)") from None


def read_faults(path: Path) -> list[Fault]:
    """Faults from a replay's JSON-lines file."""
    faults = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            faults.append(Fault(item["workflow_id"], item["run_id"], int(item["sequence"]),
                                item["kind"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"{path}:{number}: not a fault line: {exc}") from None
    return faults


def build_report(client: Client, since_ms: int, faults: list[Fault] | None = None,
                 window: int = 10) -> dict[str, Any]:
    """Every figure of the report, as plain values."""
    def run(name: str) -> list[tuple[Any, ...]]:
        return client.execute(QUERIES[name], {"since": since_ms})

    events = run("events")
    report: dict[str, Any] = {
        "since_ms": since_ms,
        "events": [{"workflow_type": t, "workflows": w, "events": n, "actions": a,
                    "events_per_second_of_workflow_time":
                        round(n / max((last - first) / 1000, 1e-3), 3)}
                   for t, w, n, a, first, last in events],
        "forecasts": [{"action_type": t, "actions": n, "forecast_memory_bytes": p,
                       "actual_memory_bytes": a, "underprovisioned": int(u),
                       "allocation_quality": None if q != q else q}  # NaN: all ran 0 s
                      for t, n, p, a, u, q in run("forecasts")],
        "sources": {s: n for s, n in run("sources")},
        "reservations": [{"op": op, "reason": reason, "count": n}
                         for op, reason, n in run("reservations")],
        "anomalies": [{"kind": k, "severity": s, "count": n} for k, s, n in run("anomalies")],
    }
    count, p50, p90, longest = run("lead_times")[0]
    report["lead_time_ms"] = {"actions": count, "p50": p50 if count else None,
                              "p90": p90 if count else None, "max": longest if count else None}
    report["wastage_by_method"] = wastage_by_method(run("actuals"), run("action_times"))
    if faults is not None:
        score = score_detection(faults, run("detected"), window)
        report["detection"] = {"faults": score.faults, "anomalies": score.anomalies,
                               "precision": score.precision, "recall": score.recall,
                               "by_kind": {k: {"injected": i, "detected": d}
                                           for k, (i, d) in score.by_kind.items()}}
    return report


LIVE_UNDER_TARGET = 0.01
"""The live target's budget of actions under-provisioned at first attempt (1%)."""


def wastage_by_method(actuals: list[tuple[Any, ...]],
                      started: list[tuple[Any, ...]]) -> dict[str, dict[str, float]]:
    """Memory wastage (GB·h) and under-provisioned share of the forecaster's real allocations,
    of each baseline sized like for like (``recorded_runs``, ``evaluate``'s protocol), and the
    clairvoyant floor under them (``streams.forecasting.floor``, failures within 1%)."""
    recorded = [0.0, 0]
    for *_, actual, runtime, predicted in actuals:
        waste, _ = memory_outcome(max(predicted, MINIMUM_ALLOCATION["memory"]), actual, runtime)
        recorded[0] += waste
        recorded[1] += predicted < actual
    figures = {}
    if actuals:
        result = evaluate(recorded_runs(actuals, started), baselines())
        figures = {name: (o.wastage_gbh, o.underprovisioned_share)
                   for name, o in result.overall.items()}
    figures["shadowflow (recorded)"] = (recorded[0],
                                        recorded[1] / len(actuals) if actuals else 0.0)
    if actuals:
        floor = clairvoyant_floor(recorded_runs(actuals, started), LIVE_UNDER_TARGET)
        figures[FLOOR] = (floor.wastage_gbh, floor.underprovisioned_share)
    return {name: {"wastage_gbh": round(w, 6), "underprovisioned_share": round(u, 6)}
            for name, (w, u) in figures.items()}


def recorded_runs(actuals: list[tuple[Any, ...]],
                  started: list[tuple[Any, ...]]) -> list[Trace]:
    """The scored actions as timed traces, one per run, in the order the runs started: each
    action with its start (from ``ACTION_STARTED``), runtime, peak, input size and request."""
    starts = {(w, r, a): (at, float(size or 0.0), float(request or 0.0))
              for w, r, a, at, size, request in started}
    runs: dict[tuple[str, str], list[tuple[int, TraceTask]]] = {}
    types: dict[tuple[str, str], str] = {}
    for workflow_id, run_id, workflow_type, action_id, action_type, actual, runtime, _ in actuals:
        at, size, request = starts.get((workflow_id, run_id, action_id), (0, 0.0, 0.0))
        task = TraceTask(action_id, action_type, (), float(runtime), None, round(actual), None,
                         None, round(size), round(request) or None)
        runs.setdefault((workflow_id, run_id), []).append((at, task))
        types[(workflow_id, run_id)] = workflow_type
    traces = []
    for key, timed in sorted(runs.items(), key=lambda item: min(at for at, _ in item[1])):
        first = min(at for at, _ in timed)
        tasks = tuple(replace(task, start_s=(at - first) / 1000) for at, task in timed)
        traces.append(Trace(f"{key[0]}/{key[1]}", types[key], Path(key[0]), tasks))
    return traces


def render(report: dict[str, Any]) -> str:
    """The report as terminal tables."""
    lines = []
    lines.append(f"{'workflow type':<30} {'runs':>5} {'actions':>8} {'events':>8} "
                 f"{'events/s (workflow time)':>25}")
    for row in report["events"]:
        lines.append(f"{row['workflow_type'][:30]:<30} {row['workflows']:>5} "
                     f"{row['actions']:>8} {row['events']:>8} "
                     f"{row['events_per_second_of_workflow_time']:>25.1f}")
    lines.append("\nforecast sources: " + (", ".join(
        f"{n} {s.lower()}" for s, n in report["sources"].items()) or "none"))
    lines.append(f"{'action type':<32} {'actions':>7} {'forecast MiB':>13} {'actual MiB':>11} "
                 f"{'under':>6} {'quality':>8}")
    for row in report["forecasts"][:15]:
        lines.append(f"{row['action_type'][-32:]:<32} {row['actions']:>7} "
                     f"{row['forecast_memory_bytes'] / 2**20:>13.1f} "
                     f"{row['actual_memory_bytes'] / 2**20:>11.1f} {row['underprovisioned']:>6} "
                     + ("       -" if row["allocation_quality"] is None
                        else f"{row['allocation_quality']:>8.2f}"))
    lines.append("\nmemory wastage by method (the forecaster's live allocations; the baselines "
                 "sized like for like, each action when it started from what completed before; "
                 "the clairvoyant floor: one allocation per run, action type and input size, "
                 "knowing their peaks, cold starts like the rest, at most 1% failing):")
    for name, figures in report["wastage_by_method"].items():
        lines.append(f"  {name:<24} {figures['wastage_gbh']:>10.3f} GB·h, "
                     f"under-provisioned {figures['underprovisioned_share']:.2%}")
    lines.append("\nreservations: " + (", ".join(
        f"{r['count']} {r['op'].lower()}" + (f" ({r['reason']})" if r["reason"] else "")
        for r in report["reservations"]) or "none"))
    lead = report["lead_time_ms"]
    if lead["actions"]:
        lines.append(f"lead time reservation -> start (workflow time): p50 {lead['p50']:.0f} ms, "
                     f"p90 {lead['p90']:.0f} ms, max {lead['max']} ms over {lead['actions']} "
                     "actions")
    lines.append("\nanomalies: " + (", ".join(
        f"{a['count']} {a['kind']} {a['severity']}" for a in report["anomalies"]) or "none"))
    detection = report.get("detection")
    if detection:
        lines.append(f"detection against {detection['faults']} injected faults: "
                     f"{detection['anomalies']} mirror anomalies, precision "
                     f"{detection['precision']:.3f}, recall {detection['recall']:.3f}")
    return "\n".join(lines)


def charts(report: dict[str, Any], out: Path) -> list[Path]:
    """PNG charts: forecast against actual memory per action type, wastage by method,
    anomalies by severity."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    forecasts = report["forecasts"][:12]
    figure, axis = plt.subplots(figsize=(10, 5))
    names = [f["action_type"][-24:] for f in forecasts]
    positions = range(len(forecasts))
    axis.bar([p - 0.2 for p in positions], [f["forecast_memory_bytes"] / 2**20 for f in forecasts],
             0.4, label="forecast (mean)")
    axis.bar([p + 0.2 for p in positions], [f["actual_memory_bytes"] / 2**20 for f in forecasts],
             0.4, label="actual peak (mean)")
    axis.set_xticks(list(positions), names, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("MiB")
    axis.set_title("Forecast against actual peak memory per action type")
    axis.legend()
    figure.tight_layout()
    written.append(_save(figure, out / "forecast_vs_actual.png"))

    figure, axis = plt.subplots(figsize=(8, 4))
    methods = report["wastage_by_method"]
    axis.barh(list(methods), [m["wastage_gbh"] for m in methods.values()])
    axis.set_xlabel("memory wastage, GB·h")
    axis.set_title("Wastage by method (recorded peaks)")
    figure.tight_layout()
    written.append(_save(figure, out / "wastage_by_method.png"))

    figure, axis = plt.subplots(figsize=(7, 4))
    severities = list(SEVERITIES)
    counts = {s: sum(a["count"] for a in report["anomalies"] if a["severity"] == s)
              for s in severities}
    axis.bar(severities, [counts[s] for s in severities])
    axis.set_ylabel("anomalies")
    axis.set_title("Anomalies by severity")
    figure.tight_layout()
    written.append(_save(figure, out / "anomalies_by_severity.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run_report(settings: Settings, since: str | None, faults_path: str | None,
               out: str | None, json_path: str | None, window: int = 10) -> int:
    """The ``report`` command; returns the exit code."""
    try:
        since_ms = parse_since(since)
        faults = read_faults(Path(faults_path)) if faults_path else None
    except (ReportError, OSError) as exc:
        print(f"shadowflow report: {exc}", file=sys.stderr)
        return 2
    client = connect(settings)
    try:
        report = build_report(client, since_ms, faults, window)
    finally:
        client.disconnect()
    print(render(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=float))
        print(f"\nwrote {json_path}")
    if out:
        for path in charts(report, Path(out)):
            print(f"wrote {path}")
    return 0

