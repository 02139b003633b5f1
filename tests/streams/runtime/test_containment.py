"""Faults contained per message: a failing message is dead-lettered and the agent goes on; rows
ClickHouse refuses for good come back to their writer; acks stay in order, never commit past an
unstored batch (Faust's own commit rule), and a failed ack stops acking loudly."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from clickhouse_driver.errors import NetworkError, TypeMismatchError
from faust.transport.consumer import Consumer

from schemas.records import DeadLetter
from sinks.batcher import BatchingSink, Rejected, is_refusal
from sinks.tables import TableSpec
from streams.runtime.batches import (
    AcksStopped,
    InOrderAcks,
    Revocations,
    handle_contained,
    split_by_bytes,
)

SPEC = TableSpec("t", ("id", "value"))


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"wf"
    value: bytes | None = b"v"


@dataclass
class _Event:
    message: _Message


@dataclass
class _FaustCommitRule:
    """Acked offsets of one partition and Faust's rule for the offset it may commit."""

    _acked: dict[Any, list[int]] = field(default_factory=lambda: defaultdict(list))
    _acked_index: dict[Any, set[int]] = field(default_factory=lambda: defaultdict(set))
    _gap: dict[Any, Any] = field(default_factory=lambda: defaultdict(lambda: None))
    _committed_offset: dict[Any, int | None] = field(default_factory=lambda: defaultdict(
        lambda: None))
    committed: int | None = None

    def commit(self) -> int | None:
        new = Consumer._new_offset(self, "tp")  # type: ignore[arg-type]
        if new is not None:
            self.committed = self._committed_offset["tp"] = new
        return self.committed


@dataclass
class _Stream:
    rule: _FaustCommitRule
    acked: list[int] = field(default_factory=list)

    async def ack(self, event: _Event) -> bool:
        self.acked.append(event.message.offset)
        self.rule._acked["tp"].append(event.message.offset)
        return True


def _events(first: int, count: int) -> list[_Event]:
    return [_Event(_Message("wf.history", 0, offset)) for offset in range(first, first + count)]


def test_acks_follow_faust_commit_rule_and_never_pass_an_unstored_batch() -> None:
    async def scenario() -> None:
        rule = _FaustCommitRule()
        stream = _Stream(rule)
        failures: list[BaseException] = []

        async def on_failure(exc: BaseException) -> None:
            failures.append(exc)

        acks = InOrderAcks(stream, on_failure=on_failure)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        stored = [loop.create_future() for _ in range(3)]
        for i, future in enumerate(stored):
            await acks.add(future, _events(i * 5, 5))
        stored[2].set_result([])  # the third is stored first: nothing may be acked yet
        await asyncio.sleep(0.01)
        assert stream.acked == [] and rule.commit() is None
        stored[0].set_result([])
        await asyncio.sleep(0.01)
        assert rule.commit() == 5  # the first batch, and not beyond the unstored second
        stored[1].set_exception(RuntimeError("producer refused the record"))
        await asyncio.sleep(0.01)
        assert stream.acked == list(range(5)) and rule.commit() == 5
        assert len(failures) == 1 and acks.failure is failures[0]
        with pytest.raises(AcksStopped):
            await acks.add(None, _events(15, 1))
        await acks.stop()
        assert rule.commit() == 5

    asyncio.run(scenario())


def test_stop_acks_the_batches_already_stored_in_order() -> None:
    async def scenario() -> None:
        rule = _FaustCommitRule()
        stream = _Stream(rule)
        acks = InOrderAcks(stream)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        first, second, third = (loop.create_future() for _ in range(3))
        await acks.add(first, _events(0, 3))
        await acks.add(second, _events(3, 3))
        await acks.add(third, _events(6, 3))
        await asyncio.sleep(0)
        second.set_result([])
        first.set_result([])
        await acks.stop()  # third is not stored: stop acks 0..5 and no further
        assert sorted(stream.acked) == list(range(6)) and rule.commit() == 6

    asyncio.run(scenario())


def test_one_failing_message_is_dead_lettered_and_the_rest_handled() -> None:
    async def scenario() -> tuple[list[int], list[DeadLetter]]:
        handled: list[int] = []
        letters: list[DeadLetter] = []

        async def handle(events: Sequence[_Event]) -> asyncio.Future[None] | None:
            if any(e.message.offset == 2 for e in events):
                raise OverflowError("int too large to convert")
            handled.extend(e.message.offset for e in events)
            return None

        async def dead_letter(found: Sequence[DeadLetter]) -> None:
            letters.extend(found)

        future = await handle_contained(_events(0, 5), handle, dead_letter)  # type: ignore[arg-type]
        assert future is not None
        await future
        return handled, letters

    handled, letters = asyncio.run(scenario())
    assert handled == [0, 1, 3, 4]
    [letter] = letters
    assert letter.offset == 2 and "OverflowError('int too large to convert')" in letter.reason


class _Refusing:
    """An insert that refuses rows with a negative value, as ClickHouse's unsigned columns do,
    and fails ``outages`` times with a network error first."""

    def __init__(self, outages: int = 0) -> None:
        self.stored: list[int] = []
        self.outages = outages

    def __call__(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        if self.outages:
            self.outages -= 1
            raise NetworkError("connection refused")
        if any(v < 0 for v in data[1]):
            raise TypeMismatchError("Type mismatch in VALUES section: UInt64 -1")
        self.stored += list(data[0])


def test_refused_rows_come_back_with_their_origin_and_the_others_are_stored() -> None:
    insert = _Refusing(outages=2)

    async def scenario() -> tuple[list[Rejected], list[Rejected]]:
        sink = BatchingSink(insert, max_rows=1000, max_age=0.01, retry_initial=0.01)
        first = await sink.submit(SPEC, [list(range(10)), [1, 1, -1, 1, 1, 1, 1, -5, 1, 1]],
                                  [f"m{i}" for i in range(10)])
        second = await sink.submit(SPEC, [[10, 11], [1, 1]], ["n0", "n1"])
        results = await first, await second
        await sink.close()
        assert sink.stats.rejected == 2
        return results

    first, second = asyncio.run(scenario())
    assert sorted(insert.stored) == [0, 1, 3, 4, 5, 6, 8, 9, 10, 11]
    assert [r.origin for r in first] == ["m2", "m7"] and second == []
    assert "Type mismatch" in first[0].reason


def test_refusals_are_told_from_outages() -> None:
    assert is_refusal(TypeMismatchError("x")) and is_refusal(OverflowError())
    assert not is_refusal(NetworkError("down")) and not is_refusal(EOFError())
    assert not is_refusal(ConnectionRefusedError())


@dataclass
class _TP:
    topic: str
    partition: int


def test_events_taken_before_their_partition_was_revoked_are_never_acked() -> None:
    async def scenario() -> None:
        stream = _Stream(_FaustCommitRule())
        revocations = Revocations()
        acks = InOrderAcks(stream, revocations=revocations)  # type: ignore[arg-type]
        events = [*_events(0, 3), _Event(_Message("wf.history", 1, 7))]
        taken = revocations.stamp(events)
        stored = asyncio.get_running_loop().create_future()
        await acks.add(stored, events, taken)
        revocations.revoked([_TP("wf.history", 0)])  # while the batch was being stored
        stored.set_result(None)
        later = _events(3, 2)  # taken after: acked as usual
        await acks.add(None, later)
        await asyncio.sleep(0.05)
        assert stream.acked == [7, 3, 4]
        await acks.stop()

    asyncio.run(scenario())


def test_a_batch_is_handed_over_in_consecutive_parts_bounded_by_message_bytes() -> None:
    sizes = [300, 300, 500, 1_500, 100, 100, 100]
    events = [_Event(_Message("t", 0, n, value=b"x" * size)) for n, size in enumerate(sizes)]
    parts = split_by_bytes(events, 1_000)
    assert [[e.message.offset for e in part] for part in parts] == [[0, 1], [2], [3], [4, 5, 6]]
    assert split_by_bytes([], 1_000) == []
    assert len(split_by_bytes(events, 10_000)) == 1
