"""The Faust application: topics, agents and the sink, assembled from settings."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from faust.transport.drivers import aiokafka as faust_aiokafka

from schemas.codec import default_codec
from schemas.records import RESOURCE_CLASSES
from sinks.batcher import BatchingSink
from sinks.clickhouse import ColumnarWriter, connect
from streams.forecasting.forecaster import Forecaster
from streams.mirror.agents import MirrorService, register_mirror_agents
from streams.mirror.definition_feed import DefinitionFeed, initial_registry
from streams.mirror.registry import Mirrors
from streams.mirror.routes import register_routes
from streams.mirror.run import MirrorLimits
from streams.runtime.anomalies import AnomalyOutlet
from streams.runtime.auth import bearer_middleware
from streams.runtime.forwarding import Forwarding
from streams.runtime.health import register_health_route
from streams.runtime.history import register_history_agent
from streams.runtime.metrics import Sources, metrics_registry, register_metrics_route
from streams.runtime.openapi import register_openapi_route
from streams.runtime.positions import register_rewind_uncommitted
from streams.shadow.agents import ShadowService, register_shadow_agents
from streams.shadow.outbox import MAX_RECORD_BYTES
from streams.shadow.outcome_feed import OutcomeFeed
from streams.shadow.pool import ReservationPool
from streams.shadow.routes import register_shadow_routes
from streams.shadow.workflows import ShadowConfig, ShadowWorkflows
from topology import topics
from topology.settings import Settings

log = logging.getLogger(__name__)


def raw_topic(app: faust.App, name: str, settings: Settings) -> faust.TopicT:
    """A topic whose keys and values shadowflow encodes and decodes itself (Avro)."""
    return app.topic(name, key_serializer="raw", value_serializer="raw",
                     partitions=settings.partitions)


def limit_fetch_wait(wait_ms: int) -> None:
    """Make the agents' consumer wait at most ``wait_ms`` for a fetch to fill.

    Faust creates its aiokafka consumer with a fixed 1,500 ms ``fetch_max_wait_ms``; a broker
    that holds a fetch that long when little is waiting (measured with Tansu:
    ``bench/bench_reservation_latency.py``) delays every event by up to that much. aiokafka reads
    the value when the consumer starts, so it is set on the consumer Faust has just made."""
    driver = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(driver, "_shadowflow_create", driver._create_worker_consumer)

    def create_worker_consumer(self: Any, *args: Any, **kwargs: Any) -> Any:
        consumer = create(self, *args, **kwargs)
        if hasattr(consumer, "_fetch_max_wait_ms"):
            consumer._fetch_max_wait_ms = wait_ms
        else:
            log.warning("this aiokafka has no fetch wait to set; Faust's 1,500 ms stays")
        return consumer

    driver._shadowflow_create = create
    driver._create_worker_consumer = create_worker_consumer


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context Faust's Kafka clients verify the brokers with (and authenticate with
    a client certificate, when one is set)."""
    context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_file or None)
    if settings.kafka_ssl_cert_file:
        context.load_cert_chain(settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file,
                                settings.kafka_ssl_key_password or None)
    return context


def faust_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """Faust's ``broker_credentials`` for the security settings: the same protocol, SASL
    mechanism, user and certificates as the confluent-kafka clients' ``kafka_config``."""
    protocol = settings.kafka_security_protocol
    context = tls_context(settings) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password,
                                     mechanism=settings.kafka_sasl_mechanism,
                                     ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


PRODUCER_BATCH_BYTES = MAX_RECORD_BYTES
"""Largest record batch the producer sends per partition in one request: as large as the
largest step record (Faust's default is 16 KiB). The producer has one batch per partition in
flight at a time, so with 16 KiB a step's records (run records of tens of kB, step records, a
command per action) went out in hundreds of round trips per partition."""


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from ``settings``, with no agents yet. It binds
    ``web_host:web_port``, advertises ``settings.advertised_url`` to the other workers of its
    group (Faust's ``canonical_url``, sent with its group membership), requires the API token
    where one is set, and serves only shadowflow's own routes (Faust's table, router and index
    pages are off: they are undocumented and would answer without the token's owner knowing)."""
    limit_fetch_wait(settings.consumer_fetch_wait_ms)
    token = settings.api_token_value()
    return faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        broker_credentials=faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 4),
        broker_commit_interval=1.0,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.advertised_url,
        web_in_thread=False,
        web_application_options={"middlewares": [bearer_middleware(token)] if token else []},
        web_router_enabled=False, web_tables_enabled=False, web_stats_enabled=False,
        web_graph_enabled=False, web_metrics_enabled=False,
    )


def create_app(settings: Settings, outcomes: Sequence[Mapping[str, Any]] = (),
               follow_from: Mapping[int, int] | None = None) -> faust.App:
    """The worker's Faust app with every agent, timer and route registered. The shadows first
    learn ``outcomes`` (what ``shadow.outcomes`` held at start, ``read_outcomes``), then follow
    the topic on from ``follow_from`` (default: its start)."""
    app = faust_app(settings)
    codec = default_codec()
    sink = BatchingSink(ColumnarWriter(settings).insert, max_rows=settings.sink_batch_rows,
                        max_age=settings.sink_flush_seconds,
                        max_pending_rows=settings.sink_max_pending_rows,
                        retry_max=settings.sink_retry_max_seconds)
    history = raw_topic(app, topics.HISTORY, settings)
    deadletters = raw_topic(app, topics.DEADLETTER, settings)
    definitions_topic = app.topic(topics.DEFINITIONS, key_serializer="raw",
                                  value_serializer="raw", partitions=1)
    definitions = initial_registry(settings.definitions_path)
    feed = DefinitionFeed(settings.kafka_config, topics.DEFINITIONS, definitions)
    anomalies = AnomalyOutlet(raw_topic(app, topics.ANOMALIES, settings), sink, codec)
    mirrors = Mirrors(definitions, MirrorLimits(
        reorder_window=settings.mirror_reorder_window,
        gap_timeout_ms=int(settings.mirror_gap_seconds * 1000)),
        compare_wait_ms=int(settings.mirror_compare_wait_seconds * 1000))
    service = MirrorService(mirrors, codec=codec, kafka=settings,
                            mirror_topic=raw_topic(app, topics.MIRROR, settings),
                            anomalies=anomalies, retention_ms=settings.mirror_retention_ms)
    shadow_service = ShadowService(
        ShadowWorkflows(Forecaster(), ReservationPool(
            {"memory_bytes": settings.pool_memory_gib * 2**30,
             "cpu_cores": settings.pool_cpu_cores},
            ttl_ms=int(settings.reservation_ttl_seconds * 1000),
            max_lifetime_ms=int(settings.reservation_max_lifetime_seconds * 1000),
            partitions=settings.partitions),
            ShadowConfig(settings.confidence_threshold, settings.likely_next_probability,
                         settings.miss_alert_ratio,
                         int(settings.feedback_max_wait_seconds * 1000))),
        codec=codec, sink=sink, kafka=settings,
        reservation_topic=raw_topic(app, topics.RESERVATIONS, settings),
        outcome_topic=raw_topic(app, topics.OUTCOMES, settings),
        shadow_topic=raw_topic(app, topics.SHADOWS, settings), anomalies=anomalies,
        telemetry_window_ms=int(settings.telemetry_window_seconds * 1000),
        feedback_grace_ms=int(settings.feedback_grace_seconds * 1000),
        retention_ms=settings.mirror_retention_ms, seal_every=settings.shadow_seal_every)
    shadows = shadow_service.shadows
    learned = sum(shadows.learn_shared(outcome) for outcome in outcomes)
    if learned:
        log.info("learned %d outcomes other workers (or earlier runs of this one) published",
                 learned)
    outcome_feed = OutcomeFeed(settings, topics.OUTCOMES, codec, shadows.learn_shared,
                               follow_from or {})
    register_rewind_uncommitted(app)
    register_history_agent(app, source=history, deadletters=deadletters, sink=sink,
                           codec=codec, settings=settings,
                           followers=[service, shadow_service])
    register_shadow_agents(app, shadow_service, history=history,
                           telemetry=raw_topic(app, topics.TELEMETRY, settings),
                           deadletters=deadletters, settings=settings)
    register_mirror_agents(app, service, history=history,
                           state=raw_topic(app, topics.STATE, settings),
                           deadletters=deadletters, settings=settings)

    async def publish_definition(document: dict[str, object]) -> None:
        delivery = await definitions_topic.send(
            key=str(document["workflow_type"]).encode(), value=json.dumps(document).encode(),
            force=True)
        await delivery

    forwarding = Forwarding(app, history, partitions=settings.partitions,
                            timeout_seconds=settings.web_forward_timeout_seconds,
                            retry_after_seconds=settings.retry_after_seconds)
    register_routes(app, mirrors, definitions, forwarding=forwarding,
                    ensure_restored=service.ensure_restored,
                    publish_definition=publish_definition)
    register_shadow_routes(app, shadow_service, forwarding=forwarding)
    register_operations_routes(app, settings, sink, mirrors, shadows)

    @app.task
    async def start_feeds() -> None:
        feed.start()
        outcome_feed.start(asyncio.get_running_loop())

    @app.on_before_shutdown.connect
    async def close(sender: faust.App, **_: object) -> None:
        feed.stop()
        outcome_feed.stop()
        await sink.close()

    return app


def register_operations_routes(app: faust.App, settings: Settings, sink: BatchingSink,
                               mirrors: Mirrors, shadows: ShadowWorkflows) -> None:
    """``/metrics``, ``/healthz`` and ``/openapi.json``."""
    pool = shadows.pool
    register_metrics_route(app, metrics_registry(app, Sources(
        sink=sink.stats, pending_rows=lambda: sink.pending_rows,
        mirrors_held=lambda: len(mirrors.runs), shadows_held=lambda: len(shadows.runs),
        pool_held=lambda: {r: pool.in_use(r) for r in RESOURCE_CLASSES if r in pool.capacity})))

    def clickhouse() -> str:
        client = connect(settings, database="default")
        try:
            return f"ClickHouse {client.execute('SELECT version()')[0][0]}"
        finally:
            client.disconnect()

    def broker() -> str:
        metadata = AdminClient(settings.kafka_config).list_topics(timeout=2.0)
        return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics"

    register_health_route(app, {"clickhouse": clickhouse, "broker": broker})
    register_openapi_route(app)
