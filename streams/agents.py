"""Faust agents: they only move messages between topics, the pure logic and the sink.

Each agent takes messages in batches without auto-acking (``noack_take``) and acks them only
after their rows are stored and their dead letters delivered. A crash at any point therefore
re-delivers the batch, and ClickHouse's deterministic row ids absorb the repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import faust
from faust.types import EventT

from schemas.codec import Codec
from schemas.records import DeadLetter
from sinks.batcher import BatchingSink
from sinks.tables import WORKFLOW_EVENTS, workflow_event_columns
from streams.history_ingest import decode_history
from streams.messages import RawMessage
from topology.settings import Settings

log = logging.getLogger(__name__)


def raw_message(event: EventT) -> RawMessage:
    """The consumed Kafka message behind a Faust event."""
    message = event.message
    return RawMessage(message.topic, message.partition, message.offset, message.key,
                      message.value)


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


async def publish_dead_letters(topic: faust.TopicT, letters: Sequence[DeadLetter],
                               codec: Codec) -> None:
    """Send dead letters and wait until the broker has them all."""
    deliveries = []
    for letter in letters:
        log.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition,
                    letter.offset, letter.reason)
        deliveries.append(await topic.send(
            key=letter.key, value=codec.encode("DeadLetter", letter.to_avro()), force=True))
    for delivery in deliveries:
        await delivery


def register_history_agent(app: faust.App, *, source: faust.TopicT,
                           deadletters: faust.TopicT, sink: BatchingSink, codec: Codec,
                           settings: Settings) -> None:
    """``wf.history`` -> decoded events -> ``workflow_events``; bad messages -> dead letters."""

    @app.agent(source, name="history-ingest")
    async def ingest_history(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(settings.consumer_batch,
                                              within=settings.consumer_batch_seconds):
            batch = decode_history([raw_message(e) for e in events], codec, now_ms())
            await publish_dead_letters(deadletters, batch.rejects, codec)
            if batch.events:
                await sink.write(WORKFLOW_EVENTS, workflow_event_columns(batch.events))
            for event in events:
                await stream.ack(event)
