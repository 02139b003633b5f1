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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from clickhouse_driver import Client

from infra.stack import LocalStack
from schemas.records import DeadLetter
from sinks.clickhouse import connect
from streams.mirror.definitions import DEFAULT
from streams.runtime.clock import now_ms
from streams.runtime.kafka import Publisher, read_topic
from streams.traces.detection import score_detection
from streams.traces.faulty_primary import Fault, FaultPlan, simulate
from streams.traces.formats import Trace, load_wfformat
from streams.traces.playback import history_from_trace, telemetry_from_trace
from topology import topics
from topology.report import build_report, render
from topology.settings import Settings
from topology.worker import prepare
from topology.worker_process import WorkerProcess

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    settings = fresh_database(settings)
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


def fresh_database(settings: Settings, suffix: str = "_demo") -> Settings:
    """Settings on an empty database of the demo's own (``<database>_demo``, dropped first): the
    worker learns only from this run, as the baselines of the report do, so they compare like
    for like."""
    database = f"{settings.clickhouse_database}{suffix}"
    client = connect(settings, database="default")
    try:
        client.execute(f"DROP DATABASE IF EXISTS {database}")
    finally:
        client.disconnect()
    return settings.with_overrides(clickhouse_database=database)


def _feed_and_report(settings: Settings, traces: list[Trace],
                     json_path: str | None = None) -> int:
    token = uuid.uuid4().hex[:8]
    since_ms = now_ms()
    prefix = f"demo-{token}-"
    publisher = Publisher(settings)
    started = time.monotonic()
    expected = 0
    faults: list[Fault] = []
    client = connect(settings)
    print(f"replaying {len(traces)} runs one after another (each run's usage is learned before "
          "the next starts)")
    for i, trace in enumerate(traces):
        events = history_from_trace(trace, prefix + trace.name, "run-1", now_ms())
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

    stored = _poll(lambda: client.execute(
        "SELECT count() FROM workflow_events FINAL WHERE startsWith(workflow_id, %(p)s)",
        {"p": prefix})[0][0], lambda n: n >= expected, timeout=120)
    elapsed = time.monotonic() - started
    print(f"stored {stored} of {expected} events in {elapsed:.1f}s")

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
    print(f"\nthe same run as `SHADOWFLOW_CLICKHOUSE_DATABASE={settings.clickhouse_database} "
          "shadowflow report --since <demo start> --faults <its faults>` shows it:\n"
          + render(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=float))
        print(f"\nwrote {json_path}")
    ok = stored == expected and len(ours) == 2 and score.recall == 1.0
    return 0 if ok else 1


def _poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float,
          interval: float = 0.3) -> T:
    """``read()`` until ``done`` says so or ``timeout`` passes; the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _wait_for_feedback(client: Client, workflow_id: str, actions: int) -> None:
    _poll(lambda: client.execute("SELECT count() FROM feedback FINAL WHERE workflow_id = %(w)s",
                                 {"w": workflow_id})[0][0], lambda n: n >= actions, timeout=60)


def _wait_for_detection(client: Client, prefix: str, faults: list[Fault],
                        timeout: float = 30) -> list[tuple]:
    """Anomalies of this run, once every fault is explained or ``timeout`` has passed (then a
    last look after the sink's flush, so stragglers are counted too)."""
    query = ("SELECT workflow_id, kind, sequence, severity, variables.name FROM anomalies FINAL "
             "WHERE startsWith(workflow_id, %(p)s) "
             "AND kind IN ('STATE_DEVIATION', 'MISSING_EVENTS') ORDER BY workflow_id, sequence")
    _poll(lambda: client.execute(query, {"p": prefix}),
          lambda found: score_detection(faults, [(a[0], a[2]) for a in found],
                                        SNAPSHOT_EVERY).recall == 1.0,
          timeout, interval=0.5)
    time.sleep(2)
    return client.execute(query, {"p": prefix})
