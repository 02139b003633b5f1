"""The Faust application: topics, agents and the sink, assembled from settings."""

from __future__ import annotations

import faust

from schemas.codec import default_codec
from sinks.batcher import BatchingSink
from sinks.clickhouse import ColumnarWriter
from streams.agents import register_history_agent
from topology import topics
from topology.settings import Settings


def raw_topic(app: faust.App, name: str, settings: Settings) -> faust.TopicT:
    """A topic whose keys and values shadowflow encodes and decodes itself (Avro)."""
    return app.topic(name, key_serializer="raw", value_serializer="raw",
                     partitions=settings.partitions)


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from ``settings``, with no agents yet."""
    return faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 4),
        broker_commit_interval=1.0,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
    )


def create_app(settings: Settings) -> faust.App:
    """The worker's Faust app with every agent registered."""
    app = faust_app(settings)
    sink = BatchingSink(ColumnarWriter(settings).insert, max_rows=settings.sink_batch_rows,
                        max_age=settings.sink_flush_seconds,
                        max_pending_rows=settings.sink_max_pending_rows,
                        retry_max=settings.sink_retry_max_seconds)
    codec = default_codec()
    register_history_agent(
        app, source=raw_topic(app, topics.HISTORY, settings),
        deadletters=raw_topic(app, topics.DEADLETTER, settings),
        sink=sink, codec=codec, settings=settings)

    @app.on_before_shutdown.connect
    async def close_sink(sender: faust.App, **_: object) -> None:
        await sink.close()

    return app
