"""Shadow workflows on a running worker: manual, model and historical sizing, reservations,
feedback and the seed routes. Real broker, real ClickHouse, a real worker process.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

from sinks.clickhouse import connect
from streams.runtime.kafka import Publisher, read_topic
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace, telemetry_from_trace
from tests.support import TRACES, WorkerProcess, http, wait_for
from topology import topics
from topology.settings import Settings

TRACE = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"


def _publish_run(settings: Settings, workflow_id: str, workflow_type: str | None = None,
                 telemetry: bool = True, action_suffix: str = "",
                 report_usage: bool = True) -> list:
    trace = load_wfformat(TRACE)
    events = history_from_trace(trace, workflow_id, "run-1", 1_700_000_000_000,
                                report_usage=report_usage)
    if workflow_type:
        events = [dataclasses.replace(e, workflow_type=workflow_type) for e in events]
    if action_suffix:
        events = [dataclasses.replace(e, action_type=f"{e.action_type}{action_suffix}")
                  if e.action_type else e for e in events]
    publisher = Publisher(settings)
    publisher.send_history(events, per_message=50)
    if telemetry:
        publisher.send_telemetry(telemetry_from_trace(trace, events))
    publisher.flush()
    return events


def _query(settings: Settings, sql: str, workflow_id: str) -> list[tuple]:
    return connect(settings).execute(sql, {"w": workflow_id})


def test_sizing_from_manual_to_model_and_historical_with_reservations(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(feedback_grace_seconds=0.5).start()
    base = f"http://127.0.0.1:{worker.settings.web_port}"
    first, second, other = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("a", "b", "c"))
    # Workflow types of this test's own: workers relearn from the (shared) feedback table.
    own, variant = f"blast-{uuid.uuid4().hex[:6]}", f"variant-{uuid.uuid4().hex[:6]}"
    # Action types of its own too, or the action level would know them from other tests.
    suffix = f"-{uuid.uuid4().hex[:4]}"

    # First run: nothing known, so every forecast is manual and asks for sizing.
    events = _publish_run(settings, first, own, action_suffix=suffix)
    actions = {e.action_id for e in events if e.action_id}
    wait_for(lambda: _query(settings, "SELECT count() FROM feedback FINAL "
                            "WHERE workflow_id = %(w)s", first)[0][0] == len(actions),
             what="feedback for every action of the first run")
    sources = _query(settings, "SELECT source, count() FROM predictions FINAL WHERE "
                     "workflow_id = %(w)s AND predicted_next = 0 GROUP BY source", first)
    assert dict(sources) == {"MANUAL": len(actions)}
    alerts = _query(settings, "SELECT action_id FROM anomalies FINAL WHERE workflow_id = %(w)s "
                    "AND kind = 'SIZING_NEEDED'", first)
    types = {e.action_type for e in events if e.action_id}
    assert len(alerts) == len(types), "one alert per action type, not per action"
    commands = [d.record for d in read_topic(settings, topics.RESERVATIONS)
                if d.record["workflow_id"] == first]
    ops = {(c["action_id"], c["op"]) for c in commands}
    assert all((a, "RESERVE") in ops and (a, "RELEASE") in ops for a in actions)
    assert {c["source"] for c in commands} == {"MANUAL"}

    # Second run of the same workflow type: the forecaster learned from the first.
    _publish_run(settings, second, own, telemetry=False, action_suffix=suffix)
    blastall = next(e.action_id for e in events if e.action_type == "blastall" + suffix)
    _, prediction = wait_for(
        lambda: (r := http("GET", f"{base}/shadow/{second}/prediction/{blastall}"))[0] == 200
        and r, what="the second run's prediction")
    assert prediction["source"] == "MODEL" and prediction["confidence"] >= 0.8
    peak = load_wfformat(TRACE).tasks
    real = {t.task_id: t.memory_bytes for t in peak}[blastall]
    assert real <= prediction["allocation"]["memory_bytes"] < 2 * max(
        t.memory_bytes for t in peak if t.task_type == "blastall")

    # Another workflow type running the same programs: the action type's history is used.
    _publish_run(settings, other, variant, telemetry=False, action_suffix=suffix)
    _, prediction = wait_for(
        lambda: (r := http("GET", f"{base}/shadow/{other}/prediction/{blastall}"))[0] == 200
        and r, what="the other type's prediction")
    assert prediction["source"] == "HISTORICAL"


def test_seed_routes_create_prediction_and_feedback(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory().start()
    base = f"http://127.0.0.1:{worker.settings.web_port}"
    workflow_id = f"routes-{uuid.uuid4().hex[:6]}"
    # Types of this test's own: a new worker relearns from the shared feedback table and replays
    # every earlier test's history, which must not change what is asserted here.
    own, suffix = f"routes-{uuid.uuid4().hex[:6]}", f"-{uuid.uuid4().hex[:4]}"
    # Neither telemetry nor usage in the completions: the usage is given through the route.
    events = _publish_run(settings, workflow_id, own, telemetry=False, action_suffix=suffix,
                          report_usage=False)
    action = next(e.action_id for e in events if e.action_type == "blastall" + suffix)
    wait_for(lambda: http("GET", f"{base}/shadow/{workflow_id}/prediction/{action}")[0] == 200,
             what="the prediction (after the earlier tests' history)", timeout=120)

    status, body = http("PUT", f"{base}/shadow/{workflow_id}/feedback/{action}/"
                               "cpu=0.9,memory=3GiB,network=10MB")
    assert status == 200 and body["actual"]["memory_bytes"] == 3 * 2**30
    assert body["underprovisioned"] and any("exceeded its memory" in a for a in body["alerts"])
    assert http("PUT", f"{base}/shadow/{workflow_id}/feedback/{action}/cpu=1")[0] == 409
    stored = wait_for(lambda: _query(settings, "SELECT actual_memory_bytes, underprovisioned "
                                     "FROM feedback FINAL WHERE workflow_id = %(w)s", workflow_id),
                      what="the feedback row")
    assert stored == [(3 * 2**30, 1)]

    bad = [("memory=lots", 400, "not a valid amount"), ("cpu=1GiB", 400, "not a valid amount"),
           ("speed=3", 400, "expected name=value"), ("network=1MB", 400, "at least memory"),
           ("cpu=1,cpu=2", 400, "given twice")]
    for usage, code, reason in bad:
        status, body = http("PUT", f"{base}/shadow/{workflow_id}/feedback/{action}/{usage}")
        assert (status, reason in body["reason"]) == (code, True), (usage, body)
    assert http("PUT", f"{base}/shadow/nope-{workflow_id}/feedback/x/cpu=1")[0] == 404
    assert http("GET", f"{base}/shadow/{workflow_id}/prediction/nope")[0] == 404

    created = f"created-{uuid.uuid4().hex[:6]}"
    assert http("POST", f"{base}/shadow/create/{created}", {"workflow_type": own})[0] == 201
    assert http("POST", f"{base}/shadow/create/{created}", {"workflow_type": own})[0] == 200
    assert http("POST", f"{base}/shadow/create/{created}", raw=b"[1]")[0] == 400
    # Runs of this type start with split_fasta: it is reserved ahead, before it is scheduled.
    status, likely = http("GET",
                          f"{base}/shadow/{created}/prediction/next:split_fasta{suffix}")
    assert status == 200 and likely["predicted_next"] and likely["reservation_id"]
