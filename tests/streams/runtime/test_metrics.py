"""The metric families a scrape makes from a worker's counters and state (pure: a stand-in
consumer gives the assignment and high watermarks)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

from faust.types import TP
from prometheus_client.parser import text_string_to_metric_families

from sinks.batcher import SinkStats
from streams.runtime.metrics import Sources, exposition, metrics_registry, reason_label, stats_of
from tests.support import ROOT


def test_dead_letter_reasons_have_bounded_labels() -> None:
    assert reason_label("empty message value") == "empty"
    assert reason_label("not Avro single-object encoding: marker 7468") == "undecodable"
    assert reason_label("unknown schema fingerprint 00ff") == "undecodable"
    assert reason_label("invalid cpu_cores: must be finite") == "out_of_range"
    assert reason_label("processing failed: ValueError()") == "processing_failed"
    assert reason_label("ClickHouse refused the values: x") == "refused_by_clickhouse"
    assert reason_label("early telemetry buffer full: ...") == "early_telemetry_overflow"


def _event(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition,
                                                   offset=offset))


def test_a_scrape_reports_counts_lag_and_state() -> None:
    consumer = SimpleNamespace(
        assignment=lambda: {TP("wf.history", 0), TP("wf.history", 1)},
        highwater=lambda tp: {0: 10, 1: 7}[tp.partition], _committed_offset={
            TP("wf.history", 1): 5})
    app = SimpleNamespace(consumer=consumer)
    stats = stats_of(app)
    stats.took([_event("wf.history", 0, offset) for offset in (3, 4, 5)])
    stats.history_events[0] += 120
    stats.dead_letters["empty"] += 2
    stats.anomalies[("STATE_DEVIATION", "HIGH")] += 1
    stats.forecasts.update(["MODEL", "MODEL", "MANUAL"])
    stats.reservations.update(["RESERVE", "RELEASE"])
    stats.evictions["mirror"] += 4
    sink = SinkStats()
    sink.rows_by_table["workflow_events"] += 120
    sink.retries_by_table["workflow_events"] += 3
    registry = metrics_registry(app, Sources(
        sink=sink, pending_rows=lambda: 42, mirrors_held=lambda: 7, shadows_held=lambda: 6,
        pool_held=lambda: {"memory_bytes": 2.0**31, "cpu_cores": 1.5}))
    payload, content_type = exposition(registry)
    assert content_type.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(payload.decode())
               for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("shadowflow_messages_consumed_total", topic="wf.history", partition="0") == 3
    # Partition 0: offsets up to 5 taken, high watermark 10; partition 1: committed at 5.
    assert value("shadowflow_consumer_lag_messages", topic="wf.history", partition="0") == 4
    assert value("shadowflow_consumer_lag_messages", topic="wf.history", partition="1") == 2
    assert value("shadowflow_history_events_total", partition="0") == 120
    assert value("shadowflow_dead_letters_total", reason="empty") == 2
    assert value("shadowflow_anomalies_total", kind="STATE_DEVIATION", severity="HIGH") == 1
    assert value("shadowflow_forecasts_total", source="MODEL") == 2
    assert value("shadowflow_reservation_commands_total", op="RELEASE") == 1
    assert value("shadowflow_sink_inserted_rows_total", table="workflow_events") == 120
    assert value("shadowflow_sink_retries_total", table="workflow_events") == 3
    assert value("shadowflow_sink_pending_rows") == 42
    assert value("shadowflow_pool_held", resource="memory_bytes") == 2.0**31
    assert value("shadowflow_mirrors_held") == 7 and value("shadowflow_shadows_held") == 6
    assert value("shadowflow_evictions_total", kind="mirror") == 4
    assert value("shadowflow_process_resident_memory_bytes") > 0


def test_the_grafana_dashboard_asks_only_for_metrics_a_worker_exposes() -> None:
    dashboard = json.loads((ROOT / "infra" / "grafana" / "shadowflow-dashboard.json").read_text())
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: set()))
    registry = metrics_registry(app, Sources(SinkStats(), lambda: 0, lambda: 0, lambda: 0,
                                             lambda: {}))
    exposed = {name for family in registry.collect()
               for name in (family.name, f"{family.name}_total")}
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"shadowflow_[a-z_]+", target["expr"])}
    assert len(asked) >= 12
    assert asked <= exposed, asked - exposed
