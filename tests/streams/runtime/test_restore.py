"""Restoring a partition's state (pure, with a reader standing in for the broker read): once per
assignment, and never for a partition revoked while its records were being read."""

from __future__ import annotations

import asyncio
import threading

from schemas.codec import default_codec
from streams.runtime.restore import Entries, PartitionRestorer


class _Reads:
    """A partition reader that blocks until released, counting its reads."""

    def __init__(self) -> None:
        self.count = 0
        self.release = threading.Event()

    def __call__(self, kafka: object, topic: str, partition: int) -> list:
        self.count += 1
        self.release.wait(5)
        return []


def _restorer(reads: _Reads, loaded: list[int]) -> PartitionRestorer:
    def load(partition: int, entries: Entries) -> int:
        loaded.append(partition)
        return 0

    return PartitionRestorer(object(), "topic", default_codec(), load, "things",  # type: ignore[arg-type]
                             reader=reads)


def test_each_partition_is_restored_once_however_many_batches_ask() -> None:
    async def scenario() -> None:
        reads, loaded = _Reads(), []
        restorer = _restorer(reads, loaded)
        reads.release.set()
        results = await asyncio.gather(*(restorer.ensure({0, 1}) for _ in range(3)))
        assert results == [{0, 1}] * 3 and sorted(loaded) == [0, 1] and reads.count == 2

    asyncio.run(scenario())


def test_a_partition_revoked_while_read_is_neither_loaded_nor_restored_for_old_batches() -> None:
    async def scenario() -> None:
        reads, loaded = _Reads(), []
        restorer = _restorer(reads, loaded)
        batch = asyncio.ensure_future(restorer.ensure({0}))
        await asyncio.sleep(0.05)  # the read has begun
        restorer.forget({0})
        reads.release.set()
        assert await batch == set() and loaded == []
        # A batch taken before the revocation finds it revoked: nothing is read for it.
        assert await restorer.ensure({0}) == set() and reads.count == 1
        restorer.assign({0})  # assigned again: restored afresh
        assert await restorer.ensure({0}) == {0} and loaded == [0] and reads.count == 2

    asyncio.run(scenario())


def test_a_partition_assigned_again_is_restored_before_the_assignment_signal_reaches_it() -> None:
    # Faust resumes fetching before every on_partitions_assigned receiver has run: a batch of the
    # new assignment must find its partition owned, or its events would be skipped and acked.
    async def scenario() -> None:
        reads, loaded = _Reads(), []
        reads.release.set()
        restorer = _restorer(reads, loaded)
        current: list[int] | None = None
        restorer.assignment = lambda: current
        restorer.forget({0, 1})
        assert await restorer.ensure({0}) == set()  # rebalancing: still revoked
        current = [0]
        assert await restorer.ensure({0, 1}) == {0} and loaded == [0]  # 1 went elsewhere

    asyncio.run(scenario())
