"""Faust agents: they only move messages between topics, the pure logic and the sink.

Each agent takes messages in batches without auto-acking (``noack_take``), hands their rows to
the sink and goes on with the next batch; a batch is acked only once its rows are stored and its
dead letters delivered, and batches are acked in the order they were taken. A crash at any point
therefore re-delivers what was not stored, and ClickHouse's deterministic row ids absorb repeats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import faust
from faust.types import EventT

from schemas.codec import Codec
from schemas.records import DeadLetter
from sinks.batcher import BatchingSink, SinkClosed
from sinks.tables import WORKFLOW_EVENTS, Located, workflow_event_columns
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


class InOrderAcks:
    """Acks batches of a stream in the order they were taken, each once its rows are stored.

    Order matters: Faust commits the first consecutive run of acked offsets, and on a partition
    with nothing committed yet it does so even when earlier offsets are still unacked. An ack
    overtaking an unstored batch could thus commit past it. After a failed batch nothing more is
    acked: the worker's successor consumes again from the last good offset.
    """

    def __init__(self, stream: faust.StreamT, max_batches: int = 32) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[tuple[asyncio.Future[None] | None, Sequence[EventT]]] = (
            asyncio.Queue(max_batches))
        self._task: asyncio.Task[None] | None = None

    async def add(self, stored: asyncio.Future[None] | None, events: Sequence[EventT]) -> None:
        """Ack ``events`` once ``stored`` (if any) resolves; waits while the queue is full."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        await self._queue.put((stored, events))

    def stop(self) -> None:
        """Stop acking (the agent is stopping; unacked messages will be consumed again)."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            stored, events = await self._queue.get()
            if stored is not None:
                try:
                    await stored
                except SinkClosed as exc:
                    log.error("rows of %d messages were not stored (%s); acking stops here so "
                              "they are consumed again after a restart", len(events), exc)
                    return
            for event in events:
                await self._stream.ack(event)


class Follower(Protocol):
    """Something that follows the history stream (the mirrors, the shadow workflows)."""

    async def apply(self, located: Sequence[Located]) -> asyncio.Future[None]:
        """Take a batch of events; the future resolves when their effects are stored."""
        ...


def all_done(futures: Sequence[asyncio.Future[Any]]) -> asyncio.Future[None]:
    """A future that resolves when all ``futures`` have, failing with the first failure."""

    async def wait() -> None:
        for future in futures:
            await future

    return asyncio.ensure_future(wait())


BatchHandler = Callable[[Sequence[EventT]], Awaitable["asyncio.Future[None] | None"]]


async def process_in_batches(stream: faust.StreamT, settings: Settings,
                             handle: BatchHandler) -> None:
    """The loop every agent runs: take a batch without acking, hand it to ``handle`` (which
    returns a future that resolves once the batch's effects are stored, or ``None``), and ack
    the batch in order when that future resolves."""
    acks = InOrderAcks(stream)
    try:
        async for events in stream.noack_take(settings.consumer_batch,
                                              within=settings.consumer_batch_seconds):
            await acks.add(await handle(events), events)
    finally:
        acks.stop()


def register_history_agent(app: faust.App, *, source: faust.TopicT,
                           deadletters: faust.TopicT, sink: BatchingSink, codec: Codec,
                           settings: Settings, followers: Sequence[Follower] = ()) -> None:
    """``wf.history`` -> decoded once -> rows in ``workflow_events`` and every follower (the
    mirrors, the shadow workflows); bad messages -> dead letters. A batch is acked when all of
    that is stored."""

    async def handle(events: Sequence[EventT]) -> asyncio.Future[None] | None:
        batch = decode_history([raw_message(e) for e in events], codec, now_ms())
        await publish_dead_letters(deadletters, batch.rejects, codec)
        if not batch.events:
            return None
        effects = [await sink.submit(WORKFLOW_EVENTS, workflow_event_columns(batch.events))]
        for follower in followers:
            effects.append(await follower.apply(batch.events))
        return all_done(effects)

    @app.agent(source, name="history-ingest")
    async def ingest_history(stream: faust.StreamT) -> None:
        await process_in_batches(stream, settings, handle)
