"""Sending the agents' own records: straight to the app's producer.

Faust's ``Topic.send`` wraps every record in a ``FutureMessage`` and routes it through its
channel and sensor callbacks; on the hot path (a command, an outcome and a record per action)
that machinery cost more than the send itself (py-spy, ``bench/bench_first_path.py``). Keys and
values here are bytes shadowflow encoded itself, so nothing of it is needed.

``send_all`` goes one step further for a step's many records: it fills aiokafka batches itself,
one per partition (``AIOKafkaProducer.create_batch``/``send_batch``), so each record costs an
append to a buffer rather than a coroutine, a partition lookup and an accumulator call; the
records are on the broker, and ordered within each partition, exactly as one ``send_raw`` each
would have put them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

Record = tuple[bytes | None, bytes | None, int | None]
"""Key, value (``None``: a tombstone) and partition (``None``: the key's)."""


async def send_raw(topic: faust.TopicT, key: bytes | None, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[Any]:
    """Hand one record to the producer (``partition`` ``None``: the key's, as for any Kafka
    client); returns the future of its delivery. The producer's flush covers it."""
    return await topic.app.producer.send(topic.get_topic_name(), key, value, partition, None,
                                         None)


async def send_all(topic: faust.TopicT, records: Iterable[Record]) -> list[asyncio.Future[Any]]:
    """Hand ``records`` to the producer in as few batches as they fit in, in order within each
    partition; returns the futures of the batches' delivery (all of them: every record)."""
    records = list(records)
    if not records:
        return []
    name = topic.get_topic_name()
    producer = _aiokafka_producer(topic)
    await producer.partitions_for(name)  # the metadata the partitioner reads
    by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for key, value, partition in records:
        # The producer's own choice, as send_raw's: the key's partition unless one is given.
        chosen = producer._partition(name, partition, key, value, key, value)
        by_partition.setdefault(chosen, []).append((key, value))
    deliveries = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        appended = 0
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is not None:
                appended += 1
                continue
            if appended:  # full: send it and go on in a new one
                deliveries.append(await producer.send_batch(batch, name, partition=partition))
                batch, appended = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is not None:
                    appended = 1
                    continue
            # Larger than a batch: the accumulator sends it alone, as it would any record.
            deliveries.append(await send_raw(topic, key, value, partition))
        if appended:
            deliveries.append(await producer.send_batch(batch, name, partition=partition))
    return deliveries


def _aiokafka_producer(topic: faust.TopicT) -> AIOKafkaProducer:
    # Faust's aiokafka driver keeps the client it started; its sends go through the same one,
    # so batches and single sends share one accumulator, one order per partition.
    return topic.app.producer._ensure_producer()
