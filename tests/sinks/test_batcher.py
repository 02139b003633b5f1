"""The batching sink against the real ClickHouse: batching, exactly-once ids, and an outage."""

from __future__ import annotations

import asyncio
import uuid

from infra.stack import LocalStack
from schemas.records import EventKind, HistoryEvent
from sinks.batcher import BatchingSink
from sinks.clickhouse import ColumnarWriter, connect
from sinks.migrations import migrate
from sinks.tables import WORKFLOW_EVENTS, workflow_event_columns
from streams.runtime.messages import Located
from topology.settings import Settings


def _columns(workflow_id: str, sequences: range) -> list[list]:
    return workflow_event_columns([
        Located(HistoryEvent(workflow_id, "run", "t", s, EventKind.STATE_UPDATED, 1_000 + s,
                             values={"x": s}), 0, s) for s in sequences])


def _stored(settings: Settings, workflow_id: str) -> tuple[int, int, int]:
    rows = connect(settings).execute(
        "SELECT count(), uniqExact(row_id), max(sequence) FROM workflow_events FINAL "
        "WHERE workflow_id = %(w)s", {"w": workflow_id})
    return rows[0]


def test_rows_are_batched_and_a_replayed_batch_is_not_double_counted(settings: Settings) -> None:
    migrate(settings)
    workflow_id = f"batch-{uuid.uuid4().hex[:8]}"

    async def scenario() -> BatchingSink:
        sink = BatchingSink(ColumnarWriter(settings).insert, max_rows=1000, max_age=0.2)
        # 10 writers of 300 rows: flushed by size (1000) and by age for the rest.
        await asyncio.gather(*(sink.write(WORKFLOW_EVENTS, _columns(workflow_id,
                                                                     range(i * 300, i * 300 + 300)))
                               for i in range(10)))
        # The same rows again, as after a crash before the Kafka commit.
        await sink.write(WORKFLOW_EVENTS, _columns(workflow_id, range(0, 3000)))
        await sink.close()
        return sink

    sink = asyncio.run(scenario())
    assert _stored(settings, workflow_id) == (3000, 3000, 2999)
    assert sink.stats.rows == 6000
    assert sink.stats.inserts < 12  # batched, not one insert per write


def test_clickhouse_outage_causes_waiting_and_retries_not_lost_rows(
        stack: LocalStack, settings: Settings) -> None:
    migrate(settings)
    workflow_id = f"outage-{uuid.uuid4().hex[:8]}"

    async def scenario() -> BatchingSink:
        sink = BatchingSink(ColumnarWriter(settings).insert, max_rows=100, max_age=0.1,
                            retry_initial=0.1, retry_max=0.5)
        await sink.write(WORKFLOW_EVENTS, _columns(workflow_id, range(0, 100)))
        stack.down(only="clickhouse")
        write = asyncio.ensure_future(
            sink.write(WORKFLOW_EVENTS, _columns(workflow_id, range(100, 250))))
        await asyncio.sleep(2.0)
        assert not write.done(), "the write must wait while ClickHouse is down"
        assert sink.stats.failed_attempts >= 2
        await asyncio.to_thread(stack.up)
        await asyncio.wait_for(write, 60)
        await sink.close()
        return sink

    sink = asyncio.run(scenario())
    assert _stored(settings, workflow_id) == (250, 250, 249)
    assert sink.stats.rows == 250


def test_rows_clickhouse_refuses_come_back_and_the_others_are_stored(settings: Settings) -> None:
    # A negative sequence does not fit workflow_events' UInt64 column: never storable, so it
    # must not be retried for ever; the rows around it are stored.
    migrate(settings)
    workflow_id = f"refused-{uuid.uuid4().hex[:8]}"
    good, bad = _columns(workflow_id, range(1, 50)), _columns(workflow_id, range(-3, -2))

    async def scenario() -> tuple[list, list]:
        sink = BatchingSink(ColumnarWriter(settings).insert, max_rows=1000, max_age=0.1,
                            retry_initial=0.05, retry_max=0.2)
        first = await sink.submit(WORKFLOW_EVENTS, good, [f"good{i}" for i in range(49)])
        second = await sink.submit(WORKFLOW_EVENTS, bad, ["bad"])
        results = await asyncio.wait_for(asyncio.gather(first, second), 30)
        await sink.close()
        return results

    refused_good, refused_bad = asyncio.run(scenario())
    assert refused_good == [] and [r.origin for r in refused_bad] == ["bad"]
    assert _stored(settings, workflow_id) == (49, 49, 49)
