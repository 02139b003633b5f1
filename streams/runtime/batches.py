"""The loop every agent runs: take messages in batches without auto-acking, hand each batch to
its handler, and ack batches strictly in the order they were taken, each once its effects are
stored.

A crash at any point therefore re-delivers what was not stored, and ClickHouse's deterministic
row ids absorb repeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import faust
from faust.types import EventT

from schemas.records import DeadLetter
from sinks.batcher import SinkClosed
from streams.runtime.clock import now_ms
from streams.runtime.messages import Located, RawMessage
from streams.runtime.metrics import stats_of
from streams.runtime.take import take_batches

log = logging.getLogger(__name__)


class BatchSettings(Protocol):
    """How agents take their batches: what the loop needs of the settings."""

    consumer_batch: int
    """Most messages taken at a time."""
    consumer_batch_seconds: float
    """Longest a batch stays open after its first message while more are queued."""
    consumer_batch_linger_seconds: float
    """Longest a batch stays open after its first message once nothing more is queued."""


class Revocations:
    """How often each topic partition was revoked from this worker.

    An event taken before its partition was revoked is never acked, even if its batch finishes
    later (the partition may have come back, and Faust would commit the ack in the new
    assignment): it is consumed again from the committed offset by whoever owns the partition
    now. Followers leave such events to that owner too (``PartitionRestorer.ensure``)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}

    def revoked(self, partitions: Iterable[Any]) -> None:
        """Note that these topic partitions (with ``topic`` and ``partition``) were revoked."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._counts[key] = self._counts.get(key, 0) + 1

    def stamp(self, events: Sequence[EventT]) -> dict[tuple[str, int], int]:
        """The revocation counts of the partitions of ``events`` now (when they are taken)."""
        return {key: self._counts.get(key, 0)
                for key in {(e.message.topic, e.message.partition) for e in events}}

    def current(self, events: Sequence[EventT],
                stamp: dict[tuple[str, int], int]) -> list[EventT]:
        """Those of ``events`` whose partition was not revoked since ``stamp``."""
        return [e for e in events
                if self._counts.get((e.message.topic, e.message.partition), 0)
                == stamp.get((e.message.topic, e.message.partition), 0)]


def register_revocations(app: faust.App) -> Revocations:
    """The app's ``Revocations``, counted from its revocation signal (one per app)."""
    existing = getattr(app, "_shadowflow_revocations", None)
    if existing is not None:
        return existing
    revocations = Revocations()
    app._shadowflow_revocations = revocations  # type: ignore[attr-defined]

    @app.on_partitions_revoked.connect
    async def count(sender: faust.App, revoked: set, **_: object) -> None:
        revocations.revoked(revoked)

    return revocations


class AcksStopped(RuntimeError):
    """Acking stopped after a batch whose effects were not stored; nothing later is acked."""


FailureHandler = Callable[[BaseException], Awaitable[None]]


class InOrderAcks:
    """Acks batches of a stream in the order they were taken, each once its rows are stored.

    Order matters: Faust commits the first consecutive run of acked offsets, and on a partition
    with nothing committed yet it does so even when earlier offsets are still unacked. An ack
    overtaking an unstored batch could thus commit past it. After a failed batch (its future
    fails, whatever the exception) nothing more is acked, the failure is logged and handed to
    ``on_failure`` (the worker crashes loudly, and its successor consumes again from the last
    good offset), and ``add`` raises ``AcksStopped`` rather than wait for ever. ``stop`` acks
    the batches already stored, in order, up to the first that is not.

    At most ``max_batches`` batches wait (besides the one being acked): ``add`` then waits,
    which is the agent's back-pressure. Fewer would bound how far the agent runs ahead of its
    storage, but each batch would then wait for the sink's flush timer with few rows behind
    it: with 4, telemetry alone fell from 338,000 to 94,000 samples/s
    (``bench/bench_load.py``) for a longest pause hardly shorter.
    """

    def __init__(self, stream: faust.StreamT, max_batches: int = 32,
                 on_failure: FailureHandler | None = None,
                 revocations: Revocations | None = None) -> None:
        self._stream = stream
        self._revocations = revocations or Revocations()
        self._queue: asyncio.Queue[_Taken] = asyncio.Queue(max_batches)
        self._task: asyncio.Task[None] | None = None
        self._current: _Taken | None = None
        self._on_failure = on_failure
        self.failure: BaseException | None = None

    async def add(self, stored: asyncio.Future[Any] | None, events: Sequence[EventT],
                  stamp: dict[tuple[str, int], int] | None = None) -> None:
        """Ack ``events`` once ``stored`` (if any) resolves, but not those whose partition was
        revoked since ``stamp`` (``Revocations.stamp`` when they were taken; default: now);
        waits while the queue is full. Raises ``AcksStopped`` once acking has stopped after a
        failure."""
        if self.failure is not None:
            raise AcksStopped("acking stopped after a failed batch") from self.failure
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        await self._queue.put((stored, events,
                               self._revocations.stamp(events) if stamp is None else stamp))

    async def stop(self) -> None:
        """Stop acking (the agent is stopping; unacked messages will be consumed again), after
        acking, in order, every batch already stored."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        pending = [self._current] if self._current is not None else []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        self._current = None
        if self.failure is not None:
            return
        for stored, events, stamp in pending:
            if stored is not None and not (stored.done() and not stored.cancelled()
                                           and stored.exception() is None):
                break
            await self._ack(events, stamp)

    async def _run(self) -> None:
        try:
            while True:
                self._current = await self._queue.get()
                stored, events, stamp = self._current
                if stored is not None:
                    await stored
                await self._ack(events, stamp)
                self._current = None
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = exc
            log.critical("a batch's effects were not stored (%r); acking stops here so its "
                         "messages are consumed again after a restart, and the worker stops",
                         exc, exc_info=not isinstance(exc, SinkClosed))
            if self._on_failure is not None:
                await self._on_failure(exc)


    async def _ack(self, events: Sequence[EventT], stamp: dict[tuple[str, int], int]) -> None:
        for event in self._revocations.current(events, stamp):
            await self._stream.ack(event)


_Taken = tuple["asyncio.Future[Any] | None", Sequence[EventT], dict[tuple[str, int], int]]
"""A batch waiting for its ack: its stored future, its events, its revocation stamp."""


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


BatchHandler = Callable[[Sequence[EventT]], Awaitable["asyncio.Future[Any] | None"]]
DeadLetterFn = Callable[[Sequence[DeadLetter]], Awaitable[None]]


async def handle_contained(events: Sequence[EventT], handle: BatchHandler,
                           dead_letter: DeadLetterFn) -> asyncio.Future[Any] | None:
    """``handle(events)``; if that raises, the batch is handled again one message at a time,
    and a message whose handling raises is dead-lettered with the exception as its reason, so
    one message can never stop an agent. (Effects the failed attempt had already made are
    made again: rows collapse in ClickHouse, mirrors ignore the events as duplicates.)"""
    try:
        return await handle(events)
    except Exception as exc:
        log.exception("a batch of %d messages failed (%r); handling them one by one",
                      len(events), exc)
    futures: list[asyncio.Future[Any]] = []
    for event in events:
        try:
            future = await handle([event])
        except Exception as exc:
            log.exception("message %s[%d]@%d failed", event.message.topic,
                          event.message.partition, event.message.offset)
            message = RawMessage.of(event)
            await dead_letter([message.dead_letter(
                f"processing failed: {exc!r}"[:2000], now_ms())])
            continue
        if future is not None:
            futures.append(future)
    return all_done(futures)


async def process_in_batches(stream: faust.StreamT, settings: BatchSettings,
                             handle: BatchHandler, dead_letter: DeadLetterFn | None = None,
                             on_failure: FailureHandler | None = None) -> None:
    """Take a batch without acking, hand it to ``handle`` (which returns a future that resolves
    once the batch's effects are stored, or ``None``), and ack the batch in order when that
    future resolves. With ``dead_letter``, a message whose handling raises is dead-lettered
    (``handle_contained``) and the agent goes on. A batch whose effects fail to be stored stops
    acking and calls ``on_failure`` (default: crash the app, so the worker stops loudly)."""
    async def crash(exc: BaseException) -> None:
        # A closed sink means the worker is already stopping: its messages stay unacked.
        if not isinstance(exc, SinkClosed):
            await stream.app.crash(exc)

    revocations = register_revocations(stream.app)
    stats = stats_of(stream.app)
    acks = InOrderAcks(stream, on_failure=on_failure or crash, revocations=revocations)
    try:
        async for events in take_batches(stream, settings.consumer_batch,
                                         settings.consumer_batch_seconds,
                                         settings.consumer_batch_linger_seconds):
            taken = revocations.stamp(events)
            stats.took(events)
            for part in split_by_bytes(events, HANDLE_MAX_BYTES):
                if dead_letter is None:
                    stored = await handle(part)
                else:
                    stored = await handle_contained(part, handle, dead_letter)
                await acks.add(stored, part, taken)
    finally:
        await acks.stop()


HANDLE_MAX_BYTES = 512 * 1024
"""Most message bytes handed to a handler at a time. A batch of 2,000 envelopes holds 100,000
events, tens of seconds of work: handled whole, none of it is acked (nor committed) until all of
it is stored, so a crash would redo all of it and progress would stall in plain sight. Parts of
this size are a few seconds of work each, acked as each is stored."""


def split_by_bytes(events: Sequence[EventT], max_bytes: int) -> list[Sequence[EventT]]:
    """``events`` in consecutive parts of at most ``max_bytes`` of message values each (a
    message larger than that is a part of its own)."""
    parts: list[Sequence[EventT]] = []
    start, size = 0, 0
    for index, event in enumerate(events):
        length = len(event.message.value or b"")
        if index > start and size + length > max_bytes:
            parts.append(events[start:index])
            start, size = index, 0
        size += length
    if start < len(events):
        parts.append(events[start:])
    return parts
