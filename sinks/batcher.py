"""A batching sink: rows buffered per table, stored by columnar inserts, writers told when.

``submit`` hands rows over and returns a future that resolves once they are stored, so a Faust
agent can go on consuming and ack its Kafka messages only when their rows are in ClickHouse
(offsets are committed strictly after storage). A buffer is flushed when it holds ``max_rows`` or
its oldest row is ``max_age`` seconds old. Inserts run on one dedicated thread, off the event
loop. A failed insert is retried with exponential back-off until it succeeds. At most
``max_pending_rows`` rows wait unstored; beyond that ``submit`` itself waits, which stops the
agent and so the consumer: during an outage the pipeline applies back-pressure, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sinks.tables import TableSpec

log = logging.getLogger(__name__)

InsertFn = Callable[[str, Sequence[str], Sequence[Sequence[Any]]], None]
"""Stores columns (table, column names, one sequence per column); raises on failure."""


class SinkClosed(RuntimeError):
    """The sink was closed before these rows could be stored; they were not acknowledged."""


@dataclass
class SinkStats:
    """Counters for logs and benchmarks."""

    rows: int = 0
    inserts: int = 0
    failed_attempts: int = 0


@dataclass
class _Buffer:
    spec: TableSpec
    columns: list[list[Any]]
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
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

    async def write(self, spec: TableSpec, columns: Sequence[Sequence[Any]]) -> None:
        """Add rows and wait until they are stored (``submit``, then await its future)."""
        await (await self.submit(spec, columns))

    async def submit(self, spec: TableSpec,
                     columns: Sequence[Sequence[Any]]) -> asyncio.Future[None]:
        """Add rows (given as columns in ``spec.columns`` order); waits only while too many rows
        are unstored. The returned future resolves when the rows are stored, or fails with
        ``SinkClosed`` if the sink is closed before they are."""
        if self._closed:
            raise SinkClosed("sink is closed")
        if len(columns) != len(spec.columns):
            raise ValueError(f"{spec.name}: {len(columns)} columns given, "
                             f"{len(spec.columns)} expected")
        count = len(columns[0]) if columns else 0
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if count == 0:
            waiter.set_result(None)
            return waiter
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
                buffer.columns = [[] for _ in buffer.spec.columns]
                buffer.waiters, buffer.rows = [], 0
                try:
                    await self._insert_with_retry(buffer.spec, columns, rows)
                except BaseException as exc:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(SinkClosed(f"insert abandoned: {exc!r}"))
                    raise
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                async with self._room:
                    self._pending -= rows
                    self._room.notify_all()
        finally:
            buffer.flushing = None

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
                log.warning("insert of %d rows into %s failed (attempt %d), retrying in %.1fs: "
                            "%s", rows, spec.name, attempt, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                attempt += 1
                continue
            self.stats.rows += rows
            self.stats.inserts += 1
            if attempt > 1:
                log.info("insert of %d rows into %s succeeded after %d attempts",
                         rows, spec.name, attempt)
            log.debug("inserted %d rows into %s in %.3fs", rows, spec.name,
                      time.monotonic() - started)
            return
