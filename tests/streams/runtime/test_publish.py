"""Records sent in batches (``send_all``) land exactly as one ``send_raw`` each would put them:
the same partitions, the same order within each, tombstones and oversized records included
(the real broker)."""

from __future__ import annotations

import asyncio
import uuid

import faust
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.runtime.publish import Record, send_all, send_raw
from topology.settings import Settings

PARTITIONS = 3


def _records() -> list[Record]:
    records: list[Record] = [(f"wf-{i % 7}".encode(), f"value-{i}".encode() * 20, None)
                             for i in range(300)]
    records[40] = (b"wf-big", b"x" * 100_000, None)  # larger than a producer batch
    records[41] = (b"wf-3", None, None)  # a tombstone
    records += [(f"pinned-{i}".encode(), f"p{i}".encode(), 2) for i in range(20)]
    return records


def _topic(settings: Settings) -> str:
    name = f"test.publish-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.broker})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(30)
    return name


def _read(settings: Settings, topic: str, count: int) -> dict[int, list[tuple]]:
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": f"read-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen: dict[int, list[tuple]] = {p: [] for p in range(PARTITIONS)}
    try:
        for _ in range(600):
            if sum(map(len, seen.values())) >= count:
                break
            for message in consumer.consume(500, timeout=0.2):
                assert message.error() is None, message.error()
                seen[message.partition()].append((message.key(), message.value()))
    finally:
        consumer.close()
    return seen


def test_batched_records_land_where_and_in_the_order_single_sends_put_them(
        settings: Settings) -> None:
    batched, single = _topic(settings), _topic(settings)
    records = _records()

    async def send() -> None:
        app = faust.App(f"test-publish-{uuid.uuid4().hex[:6]}", broker=f"kafka://{settings.broker}")
        await app.producer.start()
        try:
            deliveries = await send_all(app.topic(batched), records)
            assert len(deliveries) < len(records) / 10  # batches, not a send per record
            one_by_one = [await send_raw(app.topic(single), k, v, p) for k, v, p in records]
            await asyncio.gather(*deliveries, *one_by_one)
        finally:
            await app.producer.stop()

    asyncio.run(send())
    landed = _read(settings, batched, len(records))
    assert landed == _read(settings, single, len(records))
    assert sum(map(len, landed.values())) == len(records)
    assert landed[2][-20:] == [(f"pinned-{i}".encode(), f"p{i}".encode()) for i in range(20)]
    assert (b"wf-big", b"x" * 100_000) in [item for items in landed.values() for item in items]
