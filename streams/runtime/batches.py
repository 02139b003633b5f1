"""The loop every agent runs: take messages in batches without auto-acking, hand each batch to
its handler, and ack batches strictly in the order they were taken, each once its effects are
stored.

A crash at any point therefore re-delivers what was not stored, and ClickHouse's deterministic
row ids absorb repeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import faust
from faust.types import EventT

from sinks.batcher import SinkClosed
from streams.runtime.messages import Located

log = logging.getLogger(__name__)


class BatchSettings(Protocol):
    """How agents take their batches: what the loop needs of the settings."""

    consumer_batch: int
    """Most messages taken at a time."""
    consumer_batch_seconds: float
    """Longest wait to fill a batch."""


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


async def process_in_batches(stream: faust.StreamT, settings: BatchSettings,
                             handle: BatchHandler) -> None:
    """Take a batch without acking, hand it to ``handle`` (which returns a future that resolves
    once the batch's effects are stored, or ``None``), and ack the batch in order when that
    future resolves."""
    acks = InOrderAcks(stream)
    try:
        async for events in stream.noack_take(settings.consumer_batch,
                                              within=settings.consumer_batch_seconds):
            await acks.add(await handle(events), events)
    finally:
        acks.stop()
