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


class PartitionRestorer:
    """Reads a partition of ``topic`` and hands its records to ``load`` the first time the
    partition is needed after it was assigned."""

    def __init__(self, kafka: KafkaAddress, topic: str, codec: Codec,
                 load: Callable[[int, Entries], int], what: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self._codec = codec
        self._load = load
        self._what = what
        self.restored: set[int] = set()
        self._restoring: dict[int, asyncio.Task[None]] = {}

    async def ensure(self, partitions: Iterable[int]) -> None:
        """Restore the partitions not yet restored since they were assigned."""
        for partition in sorted(set(partitions) - self.restored):
            task = self._restoring.get(partition)
            if task is None:
                task = self._restoring[partition] = asyncio.ensure_future(
                    self._restore(partition))
            await asyncio.shield(task)

    def forget(self, partitions: Iterable[int]) -> None:
        """The worker no longer owns these partitions: restore them again if they come back."""
        self.restored -= set(partitions)

    async def _restore(self, partition: int) -> None:
        try:
            raw = await asyncio.to_thread(read_partition, self._kafka, self._topic, partition)
            entries = [(key or b"", None if value is None else self._codec.decode(value).record)
                       for key, value in raw]
            count = self._load(partition, entries)
            self.restored.add(partition)
            log.info("restored %d %s of partition %d from %d records", count, self._what,
                     partition, len(entries))
        finally:
            self._restoring.pop(partition, None)
