"""A batching sink: rows buffered per table, stored by columnar inserts, writers told when.

``submit`` hands rows over and returns a future that resolves once they are stored, so a Faust
agent can go on consuming and ack its Kafka messages only when their rows are in ClickHouse
(offsets are committed strictly after storage). A buffer is flushed when it holds ``max_rows`` or
its oldest row is ``max_age`` seconds old. Inserts run on one dedicated thread, off the event
loop. A failed insert is retried with exponential back-off until it succeeds, unless the error
says the values themselves can never be stored (``is_refusal``: a type, range or parse error,
raised by the driver or by ClickHouse): then the batch is split in halves until the refused rows
are alone, the others are stored, and the refused rows are handed back to their writers (each
with the origin given to ``submit``) as ``Rejected``, for the writer's dead-letter path. At most
``max_pending_rows`` rows wait unstored; beyond that ``submit`` itself waits, which stops the
agent and so the consumer: during an outage the pipeline applies back-pressure, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from struct import error as StructError
from typing import Any

from sinks.tables import TableSpec

log = logging.getLogger(__name__)

InsertFn = Callable[[str, Sequence[str], Sequence[Sequence[Any]]], None]
"""Stores columns (table, column names, one sequence per column); raises on failure."""


class SinkClosed(RuntimeError):
    """The sink was closed before these rows could be stored; they were not acknowledged."""


REFUSAL_CODES = frozenset({
    6, 22, 25, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 346, 349, 376, 441})
"""ClickHouse error codes that mean the values cannot be stored, however often retried:
CANNOT_PARSE_* (6, 22, 25, 26, 27, 38, 41, 72, 376, 441), TYPE_MISMATCH (53),
ARGUMENT_OUT_OF_BOUND (69), CANNOT_CONVERT_TYPE (70), INCORRECT_DATA (117),
TOO_LARGE_STRING_SIZE (131), VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE (321),
CANNOT_CONVERT_CHARSET (346), CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN (349). Network errors,
timeouts and a server that is down are not among them: those are retried."""


def is_refusal(exc: BaseException) -> bool:
    """Whether a failed insert failed because of the values it carried (splitting the batch
    finds the rows), rather than because ClickHouse could not be reached (retry)."""
    if getattr(exc, "code", None) in REFUSAL_CODES:
        return True
    return isinstance(exc, TypeError | ValueError | OverflowError | StructError)


@dataclass(frozen=True)
class Rejected:
    """A row ClickHouse can never store, with the origin its writer gave and the reason."""

    origin: Any
    reason: str


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SinkStats:
    """Counters for logs and benchmarks."""

    rows: int = 0
    inserts: int = 0
    failed_attempts: int = 0
    rejected: int = 0
    rows_by_table: Counter[str] = field(default_factory=Counter)
    """Rows stored, per table."""
    retries_by_table: Counter[str] = field(default_factory=Counter)
    """Failed inserts retried (ClickHouse unreachable or failing), per table."""
    rejected_by_table: Counter[str] = field(default_factory=Counter)
    """Rows ClickHouse refused for good (handed back to be dead-lettered), per table."""


@dataclass
class _Buffer:
    spec: TableSpec
    columns: list[list[Any]]
    waiters: list[asyncio.Future[list[Rejected]]] = field(default_factory=list)
    origins: list[tuple[int, Any]] = field(default_factory=list)
    """Per row: the index of its waiter in ``waiters`` and the origin given to ``submit``."""
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    flushing: asyncio.Task[None] | None = None

    @classmethod
    def empty(cls, spec: TableSpec) -> _Buffer:
        return cls(spec, [[] for _ in spec.columns])


class BatchingSink:
    """Buffers rows per table and stores them in batches; see the module docstring."""

    def __init__(self, insert: InsertFn, *, max_rows: int = 20000, max_age: float = 1.0,
                 max_pending_rows: int = 100_000, retry_initial: float = 0.1,
                 retry_max: float = 10.0) -> None:
        self._insert = insert
        self._max_rows = max_rows
        self._max_pending = max(max_pending_rows, max_rows)
        self._pending = 0
        self._room = asyncio.Condition()
        self._max_age = max_age
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._buffers: dict[str, _Buffer] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-sink")
        self._closed = False
        self.stats = SinkStats()

    @property
    def pending_rows(self) -> int:
        """Rows handed to the sink and not stored yet (what back-pressure is measured on)."""
        return self._pending

    async def write(self, spec: TableSpec, columns: Sequence[Sequence[Any]],
                    origins: Sequence[Any] | None = None) -> list[Rejected]:
        """Add rows and wait until they are stored (``submit``, then await its future); returns
        the rows refused for good."""
        return await (await self.submit(spec, columns, origins))

    async def submit(self, spec: TableSpec, columns: Sequence[Sequence[Any]],
                     origins: Sequence[Any] | None = None) -> asyncio.Future[list[Rejected]]:
        """Add rows (given as columns in ``spec.columns`` order), each with an optional origin
        (for example the message it came from); waits only while too many rows are unstored.
        The returned future resolves when the rows are stored, to the rows ClickHouse refused
        for good (usually none), or fails with ``SinkClosed`` if the sink is closed before they
        are."""
        if self._closed:
            raise SinkClosed("sink is closed")
        if len(columns) != len(spec.columns):
            raise ValueError(f"{spec.name}: {len(columns)} columns given, "
                             f"{len(spec.columns)} expected")
        count = len(columns[0]) if columns else 0
        waiter: asyncio.Future[list[Rejected]] = asyncio.get_running_loop().create_future()
        if count == 0:
            waiter.set_result([])
            return waiter
        if origins is not None and len(origins) != count:
            raise ValueError(f"{spec.name}: {len(origins)} origins for {count} rows")
        async with self._room:
            # One oversized submission is let through alone rather than blocked for ever.
            await self._room.wait_for(
                lambda: self._pending == 0 or self._pending + count <= self._max_pending)
            self._pending += count
        buffer = self._buffers.get(spec.name)
        if buffer is None:
            buffer = self._buffers[spec.name] = _Buffer.empty(spec)
        for target, values in zip(buffer.columns, columns, strict=True):
            target.extend(values)
        buffer.rows += count
        index = len(buffer.waiters)
        buffer.origins.extend((index, origin) for origin in (origins or [None] * count))
        buffer.waiters.append(waiter)
        if buffer.rows >= self._max_rows:
            self._start_flush(buffer)
        elif buffer.timer is None and buffer.flushing is None:
            buffer.timer = asyncio.get_running_loop().call_later(
                self._max_age, self._start_flush, buffer)
        return waiter

    async def flush(self) -> None:
        """Store everything buffered now, and wait until it is stored."""
        for buffer in list(self._buffers.values()):
            if buffer.rows:
                self._start_flush(buffer)
        pending = [b.flushing for b in self._buffers.values() if b.flushing is not None]
        if pending:
            await asyncio.gather(*pending)

    async def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop. Rows still unstored after ``timeout`` seconds (ClickHouse down)
        fail their writers with ``SinkClosed``, so their Kafka messages are never acked."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.error("closing the sink with rows unstored after %.0fs; their messages stay "
                      "unacknowledged and will be consumed again", timeout)
        self._closed = True
        for buffer in self._buffers.values():
            if buffer.flushing is not None:
                buffer.flushing.cancel()
            for waiter in buffer.waiters:
                if not waiter.done():
                    waiter.set_exception(SinkClosed("sink closed before the rows were stored"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _start_flush(self, buffer: _Buffer) -> None:
        if buffer.timer is not None:
            buffer.timer.cancel()
            buffer.timer = None
        if buffer.flushing is None:
            buffer.flushing = asyncio.get_running_loop().create_task(self._drain(buffer))

    async def _drain(self, buffer: _Buffer) -> None:
        # Rows that arrive while an insert runs form the next batch; the loop ends with an
        # empty buffer, so no row waits for a timer that was never set.
        try:
            while buffer.rows:
                columns, waiters, rows = buffer.columns, buffer.waiters, buffer.rows
                origins = buffer.origins
                buffer.columns = [[] for _ in buffer.spec.columns]
                buffer.waiters, buffer.rows, buffer.origins = [], 0, []
                try:
                    refused = await self._store(buffer.spec, columns, list(range(rows)))
                except BaseException as exc:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(SinkClosed(f"insert abandoned: {exc!r}"))
                    raise
                by_waiter: list[list[Rejected]] = [[] for _ in waiters]
                for row, reason in refused:
                    index, origin = origins[row]
                    by_waiter[index].append(Rejected(origin, reason))
                for waiter, rejected in zip(waiters, by_waiter, strict=True):
                    if not waiter.done():
                        waiter.set_result(rejected)
                async with self._room:
                    self._pending -= rows
                    self._room.notify_all()
        finally:
            buffer.flushing = None

    async def _store(self, spec: TableSpec, columns: list[list[Any]],
                     rows: list[int]) -> list[tuple[int, str]]:
        """Store ``rows`` (their indices into ``columns``); returns the rows ClickHouse refused
        for good, with the reason, after storing the others (halving the batch around them)."""
        part = columns if len(rows) == len(columns[0]) else [
            [column[i] for i in rows] for column in columns]
        try:
            await self._insert_with_retry(spec, part, len(rows))
            return []
        except _Refused as refused:
            if len(rows) == 1:
                self.stats.rejected += 1
                self.stats.rejected_by_table[spec.name] += 1
                log.error("ClickHouse refused a row of %s for good; handing it back: %s",
                          spec.name, refused.reason)
                return [(rows[0], refused.reason)]
        middle = len(rows) // 2
        return (await self._store(spec, columns, rows[:middle])
                + await self._store(spec, columns, rows[middle:]))

    async def _insert_with_retry(self, spec: TableSpec, columns: list[list[Any]],
                                 rows: int) -> None:
        loop = asyncio.get_running_loop()
        delay = self._retry_initial
        attempt = 1
        while True:
            started = time.monotonic()
            try:
                await loop.run_in_executor(
                    self._executor, self._insert, spec.name, spec.columns, columns)
            except Exception as exc:
                self.stats.failed_attempts += 1
                if is_refusal(exc):
                    raise _Refused(f"ClickHouse refused the values: {exc!r}"[:2000]) from exc
                self.stats.retries_by_table[spec.name] += 1
                log.warning("insert of %d rows into %s failed (attempt %d), retrying in %.1fs: "
                            "%s", rows, spec.name, attempt, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                attempt += 1
                continue
            self.stats.rows += rows
            self.stats.rows_by_table[spec.name] += rows
            self.stats.inserts += 1
            if attempt > 1:
                log.info("insert of %d rows into %s succeeded after %d attempts",
                         rows, spec.name, attempt)
            log.debug("inserted %d rows into %s in %.3fs", rows, spec.name,
                      time.monotonic() - started)
            return
