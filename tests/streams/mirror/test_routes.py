"""The mirror on a running worker: state, anomalies, promotion, what-if, definitions, a crash.

Real broker, real ClickHouse, a real worker process; requests over HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from schemas.records import HistoryEvent, StateSnapshot
from sinks.clickhouse import connect
from streams.mirror.definitions import DEFAULT
from streams.mirror.run import rebuild
from streams.runtime.kafka import Publisher, read_partition, read_topic
from streams.traces.faulty_primary import FaultPlan, PrimaryRun, simulate
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import TRACES, WorkerProcess, http, wait_for
from topology import topics
from topology.settings import Settings

TRACE = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"


def _run(workflow_id: str,
         plan: FaultPlan | None = None) -> tuple[list[HistoryEvent], PrimaryRun]:
    events = history_from_trace(load_wfformat(TRACE), workflow_id, "run-1", 1_700_000_000_000)
    return events, simulate(events, DEFAULT, plan or FaultPlan(), snapshot_every=10, seed=7)


def _publish(settings: Settings, run: PrimaryRun, history: list[HistoryEvent] | None = None,
             snapshots: bool = True) -> None:
    publisher = Publisher(settings)
    publisher.send_history(history if history is not None else run.history, per_message=25)
    if snapshots:
        for snapshot in run.snapshots:
            publisher.send_state(snapshot)
    publisher.flush()


def _anomalies(settings: Settings, workflow_id: str) -> list[tuple]:
    return connect(settings).execute(
        "SELECT kind, sequence, severity, variables.name FROM anomalies FINAL "
        "WHERE workflow_id = %(w)s AND kind IN ('STATE_DEVIATION', 'MISSING_EVENTS') "
        "ORDER BY sequence", {"w": workflow_id})


def test_state_anomalies_promotion_and_what_if(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory().start()
    base = f"http://127.0.0.1:{worker.settings.web_port}"
    workflow_id = f"mirror-{uuid.uuid4().hex[:8]}"
    events, run = _run(workflow_id, FaultPlan(["corrupt_variable"]))
    [fault] = run.faults
    _publish(settings, run)

    last = events[-1].sequence
    status, state = wait_for(lambda: (r := http("GET", f"{base}/shadow/{workflow_id}/state"))[0]
                             == 200 and r[1]["sequence"] == last and r, what="mirrored state")
    assert state["variables"] == rebuild(events, DEFAULT).variables
    assert state["variables"]["wf.status"] == "COMPLETED"

    found = wait_for(lambda: _anomalies(settings, workflow_id), what="the anomaly in ClickHouse")
    assert [(kind, seq) for kind, seq, *_ in found] == [("STATE_DEVIATION", fault.sequence)]
    on_topic = [d.record for d in read_topic(settings, topics.ANOMALIES)
                if d.record["workflow_id"] == workflow_id
                and d.record["kind"] in ("STATE_DEVIATION", "MISSING_EVENTS")]
    assert [(a["kind"], a["sequence"]) for a in on_topic] == [("STATE_DEVIATION", fault.sequence)]
    assert on_topic[0]["variables"][0]["status"] == "DIFFERENT"

    status, promoted = http("POST", f"{base}/shadow/{workflow_id}/promote")
    assert status == 200
    assert promoted["sequence"] == last and promoted["variables"] == state["variables"]
    tail = promoted["events_since_snapshot"]
    assert [e["sequence"] for e in tail] == list(range(promoted["snapshot_sequence"] + 1, last + 1))

    status, what_if = http("POST", f"{base}/shadow/{workflow_id}/what-if", {"events": [
        {"kind": "ACTION_STARTED", "action_id": "extra-1", "action_type": "blastall"},
        {"kind": "STATE_UPDATED", "values": {"budget": 12.5}}]})
    assert status == 200
    assert what_if["sequence"] == last + 2 and what_if["from_sequence"] == last
    assert what_if["changed"]["action.extra-1"] == {"before": None, "after": "STARTED"}
    assert what_if["changed"]["budget"] == {"before": None, "after": 12.5}
    assert http("GET", f"{base}/shadow/{workflow_id}/state")[1] == state, "mirror untouched"


def test_bad_requests_get_4xx_with_a_json_reason(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory().start()
    base = f"http://127.0.0.1:{worker.settings.web_port}"
    workflow_id = f"bad-{uuid.uuid4().hex[:8]}"
    _, run = _run(workflow_id)
    _publish(settings, run, snapshots=False)
    wait_for(lambda: http("GET", f"{base}/shadow/{workflow_id}/state")[0] == 200,
             what="the mirror")

    cases = [
        ("GET", f"/shadow/nope-{workflow_id}/state", None, None, 404, "no mirror"),
        ("POST", f"/shadow/nope-{workflow_id}/promote", None, None, 404, "no mirror"),
        ("POST", f"/shadow/{workflow_id}/promote?variables=mine", None, None, 400,
         "variables must be all or own"),
        ("POST", f"/shadow/{workflow_id}/promote?tail=some", None, None, 400,
         "tail must be all or none"),
        ("POST", f"/shadow/{workflow_id}/what-if", None, b"{not json", 400, "not JSON"),
        ("POST", f"/shadow/{workflow_id}/what-if", {"events": []}, None, 400, "between 1"),
        ("POST", f"/shadow/{workflow_id}/what-if", {"events": [{"kind": "EXPLODE"}]}, None,
         400, "kind must be one of"),
        ("POST", f"/shadow/{workflow_id}/what-if", {"events": [{"kind": "ACTION_STARTED"}]},
         None, 400, "needs an action_id"),
        ("POST", f"/shadow/{workflow_id}/what-if",
         {"events": [{"kind": "STATE_UPDATED", "values": {"x": [1]}}]}, None, 400,
         "must be null, a boolean"),
        ("PUT", "/shadow/definitions/blast", {"tolerance": "high"}, None, 400,
         "tolerance must be a number"),
        ("PUT", "/shadow/definitions/blast", {"workflow_type": "other"}, None, 400,
         "does not match"),
        ("PUT", "/shadow/definitions/blast", {"severity": {"low": 5, "high": 1}}, None, 400,
         "must not decrease"),
    ]
    for method, path, body, raw, status, reason in cases:
        got_status, got = http(method, base + path, body, raw)
        assert (got_status, reason in got.get("reason", "")) == (status, True), (path, got)


def test_definitions_registered_through_the_api_apply(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory().start()
    base = f"http://127.0.0.1:{worker.settings.web_port}"
    workflow_type = f"type-{uuid.uuid4().hex[:6]}"
    status, body = http("PUT", f"{base}/shadow/definitions/{workflow_type}", {
        "tolerance": 5.0, "weights": {"wf.actions.*": 2.0}, "critical": ["wf.status"]})
    assert status == 200 and body["tolerance"] == 5.0
    status, got = http("GET", f"{base}/shadow/definitions/{workflow_type}")
    assert status == 200 and got["registered"] and got["weights"] == {"wf.actions.*": 2.0}
    on_topic = wait_for(lambda: [v for k, v in _definitions(settings) if k == workflow_type],
                        what="the definition on shadow.definitions")
    assert on_topic[-1]["tolerance"] == 5.0


def _definitions(settings: Settings) -> list[tuple[str, dict]]:
    return [(k.decode(), json.loads(v)) for k, v in
            read_partition(settings, topics.DEFINITIONS, 0) if k and v]


def test_mirror_state_survives_a_sigkill_without_false_anomalies(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    workflow_id = f"crash-{uuid.uuid4().hex[:8]}"
    events, run = _run(workflow_id)
    half = len(run.history) // 2
    first = worker_factory().start()
    base = f"http://127.0.0.1:{first.settings.web_port}"
    _publish(settings, run, history=run.history[:half], snapshots=False)
    wait_for(lambda: (r := http("GET", f"{base}/shadow/{workflow_id}/state"))[0] == 200
             and r[1]["sequence"] == run.history[half - 1].sequence, what="half the run")
    first.kill()

    second = worker_factory().start(timeout=90)
    base = f"http://127.0.0.1:{second.settings.web_port}"
    # The new worker restores the partition's mirrors when the partition next delivers.
    _publish(settings, run, history=run.history[half:])
    _, state = wait_for(
        lambda: (r := http("GET", f"{base}/shadow/{workflow_id}/state"))[0] == 200
        and r[1]["sequence"] == events[-1].sequence and r, what="the whole run after restart")
    assert state["variables"] == rebuild(events, DEFAULT).variables
    assert state["gaps"] == []
    # A deliberately wrong snapshot after the clean ones: its anomaly, alone, proves that every
    # snapshot before it (same partition, in order) was compared and found clean.
    marker = run.snapshots[-1]
    publisher = Publisher(settings)
    publisher.send_state(StateSnapshot(marker.workflow_id, marker.run_id, marker.sequence,
                                       marker.timestamp_ms, {**marker.variables, "marker": 1}))
    publisher.flush()
    found = wait_for(lambda: _anomalies(settings, workflow_id), what="the marker's anomaly")
    assert [(kind, seq, names) for kind, seq, _, names in found] == [
        ("STATE_DEVIATION", marker.sequence, ["marker"])]
