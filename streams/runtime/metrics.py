"""A worker's Prometheus metrics (``GET /metrics``).

The hot path only increments plain counters (``WorkerStats``, the sink's ``SinkStats``); the
Prometheus families are made from them, and from gauges read off the worker's state (consumer
lag, rows pending, mirrors and shadows held, pool capacity held), when Prometheus scrapes.
Names follow Prometheus conventions: ``shadowflow_`` prefix, base units, ``_total`` counters.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import faust
from faust.types import TP, EventT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from sinks.batcher import SinkStats

log = logging.getLogger(__name__)

DEAD_LETTER_REASONS: tuple[tuple[str, str], ...] = (
    ("empty message value", "empty"),
    ("invalid ", "out_of_range"),
    ("processing failed", "processing_failed"),
    ("ClickHouse refused", "refused_by_clickhouse"),
    ("early telemetry buffer full", "early_telemetry_overflow"),
)
"""Dead-letter reason (its start) -> the ``reason`` label; anything else is ``undecodable``
(not Avro, unknown schema, a record of another type, a key that is not its workflow id)."""


def reason_label(reason: str) -> str:
    """The bounded ``reason`` label of a dead letter's free-text reason."""
    for start, label in DEAD_LETTER_REASONS:
        if reason.startswith(start):
            return label
    if "key" in reason and "workflow" in reason:
        return "wrong_key"
    return "undecodable"


@dataclass
class WorkerStats:
    """What a worker counted since it started; see the module docstring."""

    consumed: Counter[tuple[str, int]] = field(default_factory=Counter)
    """Messages taken per (topic, partition)."""
    last_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    history_events: Counter[int] = field(default_factory=Counter)
    """History events decoded, per partition (an envelope carries many)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Per ``reason_label``."""
    anomalies: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Per (kind, severity)."""
    forecasts: Counter[str] = field(default_factory=Counter)
    """Per source (MODEL, HISTORICAL, MANUAL)."""
    reservations: Counter[str] = field(default_factory=Counter)
    """Commands decided, per op (RESERVE, ADJUST, RELEASE, ...)."""
    evictions: Counter[str] = field(default_factory=Counter)
    """Finished runs forgotten, per kind (``mirror``, ``shadow``)."""

    def took(self, events: Sequence[EventT]) -> None:
        """Count a batch of messages taken from the broker."""
        for event in events:
            message = event.message
            key = (message.topic, message.partition)
            self.consumed[key] += 1
            self.last_offset[key] = max(message.offset, self.last_offset.get(key, -1))


def stats_of(app: faust.App) -> WorkerStats:
    """The app's ``WorkerStats`` (one per app, made on first use)."""
    stats = getattr(app, "_shadowflow_stats", None)
    if stats is None:
        stats = WorkerStats()
        app._shadowflow_stats = stats  # type: ignore[attr-defined]
    return stats


@dataclass
class Sources:
    """What the scrape reads besides the counters: callables, so the metrics module needs no
    knowledge of the mirrors' or shadows' types."""

    sink: SinkStats
    pending_rows: Callable[[], int]
    mirrors_held: Callable[[], int]
    shadows_held: Callable[[], int]
    pool_held: Callable[[], Mapping[str, float]]
    """Resource class -> amount reserved now (bytes, cores) on this worker's partitions."""


class WorkerCollector:
    """Makes the metric families from ``WorkerStats``, the sink and the worker's state."""

    def __init__(self, app: faust.App, stats: WorkerStats, sources: Sources) -> None:
        self.app = app
        self.stats = stats
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        """Every family, made now (Prometheus' custom-collector interface)."""
        stats = self.stats
        yield _counter("shadowflow_messages_consumed", "Messages taken from each input "
                       "topic partition.", ("topic", "partition"),
                       {(t, str(p)): n for (t, p), n in stats.consumed.items()})
        yield _gauge("shadowflow_consumer_lag_messages", "Messages on each assigned input "
                     "partition not taken yet (the broker's high watermark minus the next "
                     "offset to take).", ("topic", "partition"), self._lag())
        yield _counter("shadowflow_history_events", "History events decoded (envelopes "
                       "carry many per message), per partition.", ("partition",),
                       {(str(p),): n for p, n in stats.history_events.items()})
        yield _counter("shadowflow_dead_letters", "Messages set aside on the dead-letter "
                       "topic, by reason.", ("reason",),
                       {(r,): n for r, n in stats.dead_letters.items()})
        sink = self.sources.sink
        yield _gauge("shadowflow_sink_pending_rows", "Rows handed to the ClickHouse sink and "
                     "not stored yet (agents wait above the limit).", (),
                     {(): self.sources.pending_rows()})
        yield _counter("shadowflow_sink_inserted_rows", "Rows stored in ClickHouse, per table.",
                       ("table",), {(t,): n for t, n in sink.rows_by_table.items()})
        yield _counter("shadowflow_sink_retries", "Failed ClickHouse inserts retried, per "
                       "table.", ("table",), {(t,): n for t, n in sink.retries_by_table.items()})
        yield _counter("shadowflow_sink_refused_rows", "Rows ClickHouse refused for good (their "
                       "messages dead-lettered), per table.", ("table",),
                       {(t,): n for t, n in sink.rejected_by_table.items()})
        yield _counter("shadowflow_anomalies", "Anomalies raised, by kind and severity.",
                       ("kind", "severity"), dict(stats.anomalies))
        yield _counter("shadowflow_forecasts", "Forecasts made, by source.", ("source",),
                       {(s,): n for s, n in stats.forecasts.items()})
        yield _counter("shadowflow_reservation_commands", "Reservation commands decided, by "
                       "op.", ("op",), {(o,): n for o, n in stats.reservations.items()})
        yield _gauge("shadowflow_pool_held", "Capacity reserved now on this worker's "
                     "partitions, per resource class (bytes, cores).", ("resource",),
                     {(r,): v for r, v in self.sources.pool_held().items()})
        yield _gauge("shadowflow_mirrors_held", "Run mirrors in memory.", (),
                     {(): self.sources.mirrors_held()})
        yield _gauge("shadowflow_shadows_held", "Shadow workflows (runs) in memory.", (),
                     {(): self.sources.shadows_held()})
        yield _counter("shadowflow_evictions", "Finished runs forgotten after their retention, "
                       "by kind.", ("kind",), {(k,): n for k, n in stats.evictions.items()})

    def _lag(self) -> dict[tuple[str, ...], float]:
        consumer = self.app.consumer
        lag: dict[tuple[str, ...], float] = {}
        try:
            assigned = consumer.assignment()
        except Exception as exc:  # not started yet, or rebalancing
            log.debug("no assignment to measure lag on: %r", exc)
            return lag
        committed = getattr(consumer, "_committed_offset", {})
        for tp in assigned:
            try:
                high = consumer.highwater(tp)
            except Exception:
                high = None
            if high is None:
                continue
            taken = self.stats.last_offset.get((tp.topic, tp.partition))
            position = taken + 1 if taken is not None else committed.get(TP(tp.topic,
                                                                             tp.partition))
            # A broker may report a watermark short of the last batch (Tansu): never below 0.
            lag[(tp.topic, str(tp.partition))] = max(0, high - (position or 0))
        return lag


def _family(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str,
            labels: Sequence[str], values: Mapping[tuple[str, ...], float]) -> Metric:
    family = kind(name, doc, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _counter(name: str, doc: str, labels: Sequence[str],
             values: Mapping[tuple[str, ...], float]) -> Metric:
    return _family(CounterMetricFamily, name, doc, labels, values)


def _gauge(name: str, doc: str, labels: Sequence[str],
           values: Mapping[tuple[str, ...], float]) -> Metric:
    return _family(GaugeMetricFamily, name, doc, labels, values)


def metrics_registry(app: faust.App, sources: Sources) -> CollectorRegistry:
    """A registry of the worker's families and the process' own (CPU, resident memory, open
    files), one per app so several apps in a process never share counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(app, stats_of(app), sources))
    registry.register(ProcessCollector(namespace="shadowflow", registry=None))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def register_metrics_route(app: faust.App, registry: CollectorRegistry) -> None:
    """``GET /metrics``: the registry, open without the API token (scrapers hold none)."""

    @app.page("/metrics")
    class Metrics(View):
        """GET: Prometheus' text format."""

        async def get(self, request: Request) -> Response:
            payload, content_type = exposition(registry)
            return self.bytes(payload, headers={"Content-Type": content_type})
