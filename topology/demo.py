"""``shadowflow demo``: the main job on the local stack, fed by real traces.

Brings the stack up and starts a worker process. For a mix of real workflow executions it
publishes the history, the telemetry and the primary's state snapshots, with one fault injected
into most runs (a corrupted or missing variable, a dropped event, a duplicated side effect), plus
two malformed messages. It waits until ClickHouse holds every event, the forecasts were scored and
the mirrors have had their say, prints what was stored, predicted, reserved and detected, and
stops what it started.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

from clickhouse_driver import Client

from infra.stack import LocalStack
from schemas.records import DeadLetter
from sinks.clickhouse import connect
from streams.definitions import DEFAULT
from streams.detection import score_detection
from streams.primary import Fault, FaultPlan, simulate
from streams.replay import history_from_trace, telemetry_from_trace
from streams.traces import Trace, load_wfformat
from topology import topics
from topology.consume import read_topic
from topology.publish import Publisher
from topology.report import build_report, render
from topology.settings import Settings
from topology.worker import prepare
from topology.worker_process import WorkerProcess

log = logging.getLogger(__name__)

DEFAULT_MIX = (
    "wfinstances/makeflow/blast/blast-chameleon-small-001.json",
    "wfinstances/makeflow/blast/blast-chameleon-small-002.json",
    "wfinstances/pegasus/srasearch/srasearch-chameleon-10a-001.json",
    "wfinstances/pegasus/montage/montage-chameleon-2mass-01d-001.json",
    "wfinstances/nextflow/rnaseq-dirt02-001.json",
)


def default_traces(settings: Settings) -> list[Path]:
    """The demo's mix of shared traces; ``FileNotFoundError`` naming the folder if absent."""
    paths = [settings.traces_dir / name for name in DEFAULT_MIX]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"shared traces not found under {settings.traces_dir.resolve()} (missing "
            f"{missing[0].name}); pass trace files or set SHADOWFLOW_TRACES_DIR")
    return paths


FAULTS = (["corrupt_variable"], ["dropped_event"], ["duplicated_side_effect"],
          ["missing_variable"], [])
SNAPSHOT_EVERY = 10


def run_demo(settings: Settings, paths: list[str], keep: bool = False,
             json_path: str | None = None) -> int:
    """Run the demo; returns the process exit code (0 when every event was stored)."""
    traces = [load_wfformat(Path(p)) for p in paths] if paths else [
        load_wfformat(p) for p in default_traces(settings)]
    stack = LocalStack(settings)
    already = {s.name for s in stack.status() if s.pid is not None}
    stack.up()
    # Short waits, so a dropped event is declared missing within the demo's few seconds.
    worker = WorkerProcess(settings.with_overrides(mirror_gap_seconds=3.0,
                                                   mirror_compare_wait_seconds=5.0,
                                                   feedback_grace_seconds=1.0),
                           settings.stack_dir / "demo-worker.log")
    try:
        prepare(settings)
        print(f"stack up; starting a worker (log: {worker.log_path})")
        worker.start(timeout=120)
        return _feed_and_report(settings, traces, json_path)
    finally:
        worker.stop()
        if not keep:
            for name in ("broker", "clickhouse"):
                if name not in already:
                    stack.down(only=name)
            print("stopped the worker and the services the demo started")


def _feed_and_report(settings: Settings, traces: list[Trace],
                     json_path: str | None = None) -> int:
    token = uuid.uuid4().hex[:8]
    since_ms = time.time_ns() // 1_000_000
    prefix = f"demo-{token}-"
    publisher = Publisher(settings)
    started = time.monotonic()
    expected = 0
    faults: list[Fault] = []
    client = connect(settings)
    print(f"replaying {len(traces)} runs one after another (each run's usage is learned before "
          "the next starts)")
    for i, trace in enumerate(traces):
        events = history_from_trace(trace, prefix + trace.name, "run-1", int(time.time() * 1000))
        run = simulate(events, DEFAULT, FaultPlan(FAULTS[i % len(FAULTS)]),
                       snapshot_every=SNAPSHOT_EVERY, seed=i)
        publisher.send_history(run.history)
        publisher.send_telemetry(telemetry_from_trace(trace, events))
        for snapshot in run.snapshots:
            publisher.send_state(snapshot)
        publisher.flush()
        expected += len(run.history)
        faults += run.faults
        _wait_for_feedback(client, prefix + trace.name, len(trace.tasks))
    publisher.send(topics.HISTORY, prefix + "bad", b"this is not an Avro message")
    publisher.send(topics.HISTORY, prefix + "bad", b"")
    publisher.flush()
    print(f"published {expected} history events, telemetry and the primary's snapshots of "
          f"{len(traces)} workflows in {publisher.sent} messages, with {len(faults)} injected "
          "faults and 2 malformed messages")

    stored, rows = _wait_for_events(client, prefix, expected)
    elapsed = time.monotonic() - started
    print(f"\n{'workflow type':<28} {'runs':>5} {'actions':>8} {'events stored':>14}")
    for workflow_type, runs, actions, count in rows:
        print(f"{workflow_type:<28} {runs:>5} {actions:>8} {count:>14}")
    print(f"stored {stored} of {expected} events in {elapsed:.1f}s")

    _report_forecasts(client, prefix)

    anomalies = _wait_for_detection(client, prefix, faults)
    print(f"\nmirror: {len(faults)} faults injected, {len(anomalies)} anomalies detected")
    print(f"  {'injected':<24} {'at':>5}   detected (kind, sequence, severity, variables)")
    for fault in faults:
        found = [a for a in anomalies if a[0] == fault.workflow_id
                 and fault.sequence <= a[2] <= fault.sequence + SNAPSHOT_EVERY]
        shown = "; ".join(f"{kind} @{seq} {severity} {', '.join(names[:2])}"
                          for _, kind, seq, severity, names in found) or "NOT DETECTED"
        print(f"  {fault.kind:<24} {fault.sequence:>5}   {shown}")
    score = score_detection(faults, [(a[0], a[2]) for a in anomalies], SNAPSHOT_EVERY)
    print(f"  precision {score.precision:.2f}, recall {score.recall:.2f}")

    letters = [DeadLetter.from_avro(d.record) for d in read_topic(settings, topics.DEADLETTER)]
    ours = [d for d in letters if (d.key or b"").decode(errors="replace").startswith(prefix)]
    print(f"\ndead letters on {topics.DEADLETTER}: {len(ours)} of 2 malformed messages")
    for letter in ours:
        print(f"  {letter.topic}[{letter.partition}]@{letter.offset}: {letter.reason}")
    report = build_report(client, since_ms, faults, SNAPSHOT_EVERY)
    print("\nthe same run as `shadowflow report --since <demo start> --faults <its faults>` "
          "shows it:\n" + render(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=float))
        print(f"\nwrote {json_path}")
    ok = stored == expected and len(ours) == 2 and score.recall == 1.0
    return 0 if ok else 1


def _wait_for_feedback(client: Client, workflow_id: str, actions: int,
                       timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (client.execute("SELECT count() FROM feedback FINAL WHERE workflow_id = %(w)s",
                          {"w": workflow_id})[0][0] < actions
           and time.monotonic() < deadline):
        time.sleep(0.3)


def _report_forecasts(client: Client, prefix: str) -> None:
    """What was forecast, how it compared with the actual usage, and what was reserved."""
    where = "WHERE startsWith(workflow_id, %(p)s)"
    sources = client.execute(f"SELECT source, count() FROM predictions FINAL {where} "
                             "AND predicted_next = 0 GROUP BY source ORDER BY source",
                             {"p": prefix})
    print("\nforecasts: " + ", ".join(f"{n} {s.lower()}" for s, n in sources)
          + " (manual: nothing known yet; historical: the action type elsewhere or a low "
          "confidence; model: learned for this workflow type)")
    rows = client.execute(
        f"SELECT action_type, count(), avg(predicted_memory_bytes), avg(actual_memory_bytes), "
        f"sum(underprovisioned), countIf(source = 'MODEL') FROM feedback FINAL {where} "
        "GROUP BY action_type ORDER BY count() DESC LIMIT 8", {"p": prefix})
    print(f"  {'action type':<30} {'actions':>7} {'forecast MB':>12} {'actual MB':>10} "
          f"{'under':>6} {'model':>6}")
    for action_type, count, predicted, actual, under, model in rows:
        print(f"  {action_type[-30:]:<30} {count:>7} {predicted / 2**20:>12.1f} "
              f"{actual / 2**20:>10.1f} {under:>6} {model:>6}")
    feedback = client.execute(
        f"SELECT count(), sum(underprovisioned), sum(predicted_memory_bytes * runtime_s), "
        f"sum(actual_memory_bytes * runtime_s) FROM feedback FINAL {where} "
        "AND source != 'MANUAL'", {"p": prefix})[0]
    if feedback[0]:
        print(f"  learned forecasts: {feedback[1]} of {feedback[0]} under-provisioned, memory "
              f"allocation quality {feedback[3] / max(feedback[2], 1):.2f} (usage / allocation)")
    lead = client.execute(f"SELECT count(), quantile(0.5)(lead_time_ms), max(lead_time_ms) "
                          f"FROM feedback FINAL {where} AND lead_time_ms >= 0", {"p": prefix})[0]
    if lead[0]:
        print(f"  lead time from reservation to start (workflow time): median {lead[1]:.0f} ms, "
              f"longest {lead[2]} ms over {lead[0]} actions")
    ops = client.execute(f"SELECT op, reason, count() FROM reservations FINAL {where} "
                         "GROUP BY op, reason ORDER BY op, reason", {"p": prefix})
    print("reservations: " + ", ".join(f"{n} {op.lower()}" + (f" ({reason})" if reason else "")
                                       for op, reason, n in ops))


def _wait_for_events(client: Client, prefix: str, expected: int,
                     timeout: float = 120) -> tuple[int, list[tuple]]:
    query = ("SELECT workflow_type, uniqExact(workflow_id), countIf(kind = 'ACTION_COMPLETED'), "
             "count() FROM workflow_events FINAL WHERE startsWith(workflow_id, %(p)s) "
             "GROUP BY workflow_type ORDER BY workflow_type")
    deadline = time.monotonic() + timeout
    while True:
        rows = client.execute(query, {"p": prefix})
        stored = sum(r[3] for r in rows)
        if stored >= expected or time.monotonic() > deadline:
            return stored, rows
        time.sleep(0.3)


def _wait_for_detection(client: Client, prefix: str, faults: list[Fault],
                        timeout: float = 30) -> list[tuple]:
    """Anomalies of this run, once every fault is explained or ``timeout`` has passed (then a
    last look after the sink's flush, so stragglers are counted too)."""
    query = ("SELECT workflow_id, kind, sequence, severity, variables.name FROM anomalies FINAL "
             "WHERE startsWith(workflow_id, %(p)s) "
             "AND kind IN ('STATE_DEVIATION', 'MISSING_EVENTS') ORDER BY workflow_id, sequence")
    deadline = time.monotonic() + timeout
    while True:
        anomalies = client.execute(query, {"p": prefix})
        found = score_detection(faults, [(a[0], a[2]) for a in anomalies], SNAPSHOT_EVERY)
        if found.recall == 1.0 or time.monotonic() > deadline:
            time.sleep(2)
            return client.execute(query, {"p": prefix})
        time.sleep(0.5)
