"""``shadowflow demo``: the main job on the local stack, fed by real traces.

Brings the stack up, starts a worker process, publishes the history of a mix of real workflow
executions (and two malformed messages, to show the dead-letter path), waits until ClickHouse
holds every event, prints what was stored, and stops what it started.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from infra.stack import LocalStack
from schemas.records import DeadLetter
from sinks.clickhouse import connect
from streams.replay import history_from_trace
from streams.traces import Trace, load_wfformat
from topology import topics
from topology.consume import read_topic
from topology.publish import Publisher
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


def run_demo(settings: Settings, paths: list[str], keep: bool = False) -> int:
    """Run the demo; returns the process exit code (0 when every event was stored)."""
    traces = [load_wfformat(Path(p)) for p in paths] if paths else [
        load_wfformat(p) for p in default_traces(settings)]
    stack = LocalStack(settings)
    already = {s.name for s in stack.status() if s.pid is not None}
    stack.up()
    worker = WorkerProcess(settings, settings.stack_dir / "demo-worker.log")
    try:
        prepare(settings)
        print(f"stack up; starting a worker (log: {worker.log_path})")
        worker.start(timeout=120)
        return _feed_and_report(settings, traces)
    finally:
        worker.stop()
        if not keep:
            for name in ("broker", "clickhouse"):
                if name not in already:
                    stack.down(only=name)
            print("stopped the worker and the services the demo started")


def _feed_and_report(settings: Settings, traces: list[Trace]) -> int:
    token = uuid.uuid4().hex[:8]
    publisher = Publisher(settings)
    started = time.monotonic()
    expected = 0
    for trace in traces:
        events = history_from_trace(trace, f"demo-{token}-{trace.name}", "run-1",
                                    int(time.time() * 1000))
        publisher.send_history(events)
        expected += len(events)
    publisher.send(topics.HISTORY, f"demo-{token}-bad", b"this is not an Avro message")
    publisher.send(topics.HISTORY, f"demo-{token}-bad", b"")
    publisher.flush()
    print(f"published {expected} history events of {len(traces)} workflows in "
          f"{publisher.sent} messages, plus 2 malformed messages")

    client = connect(settings)
    query = ("SELECT workflow_type, uniqExact(workflow_id), countIf(kind = 'ACTION_COMPLETED'), "
             "count() FROM workflow_events FINAL WHERE startsWith(workflow_id, %(p)s) "
             "GROUP BY workflow_type ORDER BY workflow_type")
    deadline = time.monotonic() + 120
    while True:
        rows = client.execute(query, {"p": f"demo-{token}-"})
        stored = sum(r[3] for r in rows)
        if stored >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    elapsed = time.monotonic() - started

    print(f"\n{'workflow type':<14} {'runs':>5} {'actions':>8} {'events stored':>14}")
    for workflow_type, runs, actions, count in rows:
        print(f"{workflow_type:<14} {runs:>5} {actions:>8} {count:>14}")
    print(f"\nstored {stored} of {expected} events in {elapsed:.1f}s "
          f"({stored / elapsed:.0f} events/s end to end, including the wait for the last batch)")
    letters = [DeadLetter.from_avro(d.record) for d in read_topic(settings, topics.DEADLETTER)]
    ours = [d for d in letters if (d.key or b"").decode(errors="replace").startswith(
        f"demo-{token}-")]
    print(f"dead letters on {topics.DEADLETTER}: {len(ours)} of 2 malformed messages")
    for letter in ours:
        print(f"  {letter.topic}[{letter.partition}]@{letter.offset}: {letter.reason}")
    return 0 if stored == expected and len(ours) == 2 else 1
