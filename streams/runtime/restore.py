"""Restoring per-partition state from a compacted changelog topic (the mirrors' ``shadow.mirror``,
the shadows' ``shadow.shadows``): each partition once per assignment, before it is processed
again, however many batches ask for it at the same time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from schemas.codec import Codec
from streams.runtime.kafka import KafkaAddress, read_partition

log = logging.getLogger(__name__)

Entries = list[tuple[bytes, Mapping[str, Any] | None]]
"""A partition's records in order, decoded: (key, record, or ``None`` for a tombstone)."""

Reader = Callable[[KafkaAddress, str, int], list[tuple[bytes | None, bytes | None]]]
"""Reads a partition of a topic to its end: (key, value) pairs in order."""

Assignment = Callable[[], Iterable[int] | None]
"""The partitions the worker owns now, or ``None`` while the group is rebalancing."""


class PartitionRestorer:
    """Reads a partition of ``topic`` and hands its records to ``load`` the first time the
    partition is needed after it was assigned.

    A partition revoked while its restore is reading is not loaded when the read ends (the
    records read may already be stale), and ``ensure`` leaves it out: a batch taken before the
    revocation must not rebuild state the new owner now holds.

    A revoked partition counts as assigned again as soon as ``assignment`` (the consumer's,
    once the rebalance is over) names it, even before ``assign`` is called: Faust resumes
    fetching before every ``on_partitions_assigned`` receiver has run, and a batch or a request
    of the new assignment must not find its partition still revoked (its events would be
    skipped and acked, its request answered 404)."""

    def __init__(self, kafka: KafkaAddress, topic: str, codec: Codec,
                 load: Callable[[int, Entries], int], what: str,
                 reader: Reader = read_partition) -> None:
        self._kafka = kafka
        self._reader = reader
        self._topic = topic
        self._codec = codec
        self._load = load
        self._what = what
        # Set by the worker's upkeep (``register_upkeep``), which knows the app.
        self.assignment: Assignment = lambda: None
        self.restored: set[int] = set()
        self._restoring: dict[int, asyncio.Task[None]] = {}
        # Bumped when a partition is revoked: a restore that began before is stale.
        self._generation: dict[int, int] = {}
        # Revoked and not assigned again: never restored for a batch taken before revocation.
        self.revoked: set[int] = set()

    async def ensure(self, partitions: Iterable[int]) -> set[int]:
        """Restore the partitions not yet restored since they were assigned; returns those of
        ``partitions`` that are restored now (not those revoked meanwhile)."""
        current = self.assignment()
        if current is not None:
            self.assign(self.revoked & set(current))
        wanted = set(partitions) - self.revoked
        tasks = []
        for partition in sorted(wanted - self.restored):  # read side by side
            task = self._restoring.get(partition)
            if task is None:
                task = self._restoring[partition] = asyncio.ensure_future(
                    self._restore(partition))
            tasks.append(task)
        for task in tasks:
            await asyncio.shield(task)
        return wanted & self.restored

    def forget(self, partitions: Iterable[int]) -> None:
        """The worker no longer owns these partitions: restore them again if they come back."""
        for partition in partitions:
            self.revoked.add(partition)
            self.restored.discard(partition)
            self._generation[partition] = self._generation.get(partition, 0) + 1
            self._restoring.pop(partition, None)

    def assign(self, partitions: Iterable[int]) -> None:
        """The worker owns these partitions (again): restore them when first needed."""
        self.revoked -= set(partitions)

    async def _restore(self, partition: int) -> None:
        generation = self._generation.get(partition, 0)
        try:
            raw = await asyncio.to_thread(self._reader, self._kafka, self._topic, partition)
            if self._generation.get(partition, 0) != generation:
                log.info("partition %d was revoked while its %s were read: not restored",
                         partition, self._what)
                return
            entries = [(key or b"", None if value is None else self._codec.decode(value).record)
                       for key, value in raw]
            count = self._load(partition, entries)
            self.restored.add(partition)
            log.info("restored %d %s of partition %d from %d records", count, self._what,
                     partition, len(entries))
        finally:
            if self._generation.get(partition, 0) == generation:
                self._restoring.pop(partition, None)


HAND_OVER_SECONDS = 10.0
"""Longest wait, per step of a partition hand-over, for a worker's last records and effects."""


async def hand_over(pending: Iterable[asyncio.Future[Any]], producer: Any,
                    partitions: Iterable[int], what: str) -> None:
    """Before revoked partitions are dropped: wait for ``pending`` (the records and effects
    already decided) and flush ``producer`` (Faust's), each bounded by ``HAND_OVER_SECONDS``,
    so the new owner restores what they decided and nothing of this worker trails in after.
    A wait that times out or fails is logged: the new owner then consumes the rest again."""
    try:
        waiting = [asyncio.shield(f) for f in pending]
        if waiting:
            await asyncio.wait_for(asyncio.gather(*waiting), HAND_OVER_SECONDS)
        await asyncio.wait_for(producer.flush(), HAND_OVER_SECONDS)
    except Exception as exc:
        log.warning("handing over %s of partitions %s: the last records or effects were not "
                    "confirmed on the broker (%r)", what, sorted(partitions), exc)
