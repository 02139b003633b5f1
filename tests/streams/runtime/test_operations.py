"""Operating a deployment: two workers behind an API token, their metrics and health.

Against the test stack: the token is required on every route but /metrics and /healthz (401
with a JSON reason otherwise), forwarded requests between the workers keep it and their bodies,
every answer has the shape the API document gives, the metrics move with a small replay (values
checked), and the token never shows in the workers' logs.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from schemas.records import StateSnapshot
from streams.runtime.kafka import Publisher
from streams.runtime.openapi import openapi_document
from tests.streams.runtime.test_forwarding import (
    check_create,
    check_mirror_routes,
    check_shadow_routes,
    publish_runs,
    wait_for_runs,
)
from tests.streams.runtime.test_openapi import assert_documented
from tests.support import WorkerProcess, call, one_per_partition, owners, quote_id, wait_for
from topology import topics
from topology.settings import Settings


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` without a token, parsed: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(scrapes: list[dict], name: str, **labels: str) -> float:
    """A sample summed over workers and over the labels not given."""
    return sum(value for scraped in scrapes for (sample, have), value in scraped.items()
               if sample == name and labels.items() <= dict(have).items())


def unauthorized_everywhere(bases: list[str], workflow_id: str, token: str) -> None:
    """Every documented route but /metrics and /healthz answers 401 with a reason, with no
    token or a wrong one, through either worker (before any forwarding)."""
    for path, item in openapi_document()["paths"].items():
        if path in ("/metrics", "/healthz"):
            continue
        concrete = (path.replace("{workflow_id}", quote_id(workflow_id))
                    .replace("{workflow_type}", "t").replace("{action_id}", "a")
                    .replace("{usage}", "cpu=1"))
        for method in item:
            for base in bases:
                for given in (None, f"{token}x"):
                    answer = call(method.upper(), f"{base}{concrete}", {}, token=given)
                    assert answer.status == 401 and answer.body["reason"], (method, path,
                                                                            answer)
                    assert_documented(method, path, answer.status, answer.body)


def test_token_forwarding_metrics_and_health_across_two_workers(
        settings: Settings, worker_factory: Callable[..., WorkerProcess],
        tmp_path: Path) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    token_file = tmp_path / "api-token"
    token_file.write_text(f"{token}\n")
    first = worker_factory(api_token=token).start()
    second = worker_factory(api_token_file=str(token_file)).start()  # the other way to give it
    bases = [first.settings.advertised_url, second.settings.advertised_url]
    workflow_type = f"ops-{uuid.uuid4().hex[:6]}"

    ids = one_per_partition(f"ops-{uuid.uuid4().hex[:6]}", settings.partitions)
    runs = publish_runs(settings, ids, workflow_type)
    producer = Producer(settings.kafka_config)
    producer.produce(topics.HISTORY, key=ids[0].encode(), value=b"")  # one dead letter
    producer.flush(10)
    owner = wait_for(lambda: owners(bases, ids, token), what="both workers owning partitions")
    wait_for_runs(bases, runs, token)
    unauthorized_everywhere(bases, ids[0], token)
    # With the token, every route through either worker: forwarded requests keep the token
    # and their bodies (what-if's events, create's run id and type), in the documented shapes.
    check_mirror_routes(bases, owner, runs, token=token)
    check_shadow_routes(bases, owner, runs, token=token)
    check_create(bases, owner, workflow_type, {False: [], True: []}, token=token)
    for base in bases:
        document = call("GET", f"{base}/openapi.json", token=token)
        assert document.status == 200 and document.body == openapi_document()
        health = call("GET", f"{base}/healthz")
        assert health.status == 200 and health.body["status"] == "ok", health
        assert health.body["checks"]["clickhouse"]["ok"] and health.body["checks"]["broker"]["ok"]
        assert health.body["partitions_assigned"] > 0
        assert_documented("GET", "/healthz", health.status, health.body)

    events = sum(len(e) for e in runs.values())
    actions = sum(len({e.action_id for e in evs if e.action_id}) for evs in runs.values())

    def settled() -> list[dict] | None:
        scrapes = [scrape(base) for base in bases]
        done = (total(scrapes, "shadowflow_sink_inserted_rows_total", table="workflow_events")
                >= events and total(scrapes, "shadowflow_consumer_lag_messages",
                                    topic=topics.HISTORY) == 0
                and total(scrapes, "shadowflow_dead_letters_total", reason="empty") >= 1)
        return scrapes if done else None
    scrapes = wait_for(settled, what="the metrics to show the replay stored", timeout=120)
    for scraped in scrapes:  # each worker consumed its share of the history
        assert total([scraped], "shadowflow_messages_consumed_total", topic=topics.HISTORY) > 0
    assert total(scrapes, "shadowflow_history_events_total") >= events
    # (The workers read the shared topics from their start: other tests' messages count too.)
    assert total(scrapes, "shadowflow_dead_letters_total") >= 1
    assert total(scrapes, "shadowflow_forecasts_total") >= actions
    assert total(scrapes, "shadowflow_reservation_commands_total", op="RESERVE") >= actions
    assert total(scrapes, "shadowflow_reservation_commands_total", op="RELEASE") > 0
    assert total(scrapes, "shadowflow_sink_inserted_rows_total", table="feedback") > 0
    # A primary snapshot that disagrees with the mirror: one more STATE_DEVIATION counted.
    deviations = total(scrapes, "shadowflow_anomalies_total", kind="STATE_DEVIATION")
    workflow_id, events = next(iter(runs.items()))
    publisher = Publisher(settings)
    publisher.send_state(StateSnapshot(workflow_id, events[-1].run_id, events[-1].sequence,
                                       events[-1].timestamp_ms, {"wf.status": "BOGUS"}))
    publisher.flush()
    wait_for(lambda: total([scrape(b) for b in bases], "shadowflow_anomalies_total",
                           kind="STATE_DEVIATION") > deviations,
             what="the deviation counted", timeout=60)
    assert total(scrapes, "shadowflow_mirrors_held") >= len(runs)
    assert total(scrapes, "shadowflow_shadows_held") >= len(runs)
    assert total(scrapes, "shadowflow_sink_pending_rows") >= 0
    assert all(("shadowflow_pool_held", (("resource", "memory_bytes"),)) in s for s in scrapes)
    for worker in (first, second):
        assert token not in worker.log()
