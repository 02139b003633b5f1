"""Reading a topic from the beginning with confluent-kafka, for reports and checks."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.codec import CodecError, Decoded, default_codec
from topology.settings import Settings


def read_topic(settings: Settings, topic: str, idle_seconds: float = 2.0,
               skip_undecodable: bool = False) -> list[Decoded]:
    """Every message now on ``topic``, decoded, read until none arrives for ``idle_seconds``.
    A message that does not decode raises ``CodecError``, or is passed over with
    ``skip_undecodable`` (a topic that also carries what producers got wrong).

    Uses ``assign`` rather than a group subscription: no group join to wait for, no offsets
    committed.
    """
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": "shadowflow-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                     for p in range(settings.partitions)])
    decoded = []
    try:
        while (message := consumer.poll(idle_seconds)) is not None:
            if message.error() is not None:
                raise RuntimeError(f"reading {topic}: {message.error()}")
            try:
                decoded.append(codec.decode(message.value()))
            except CodecError:
                if not skip_undecodable:
                    raise
    finally:
        consumer.close()
    return decoded


def read_partition(settings: Settings, topic: str, partition: int,
                   timeout: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every ``(key, value)`` of one partition, from its start to its end as of now (a
    tombstone has value ``None``)."""
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": "shadowflow-reader",
                         "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, partition, low)])
        entries: list[tuple[bytes | None, bytes | None]] = []
        while True:
            message = consumer.poll(timeout)
            if message is None:
                raise TimeoutError(f"{topic}[{partition}] stopped before offset {high - 1}")
            if message.error() is not None:
                raise RuntimeError(f"reading {topic}[{partition}]: {message.error()}")
            entries.append((message.key(), message.value()))
            if message.offset() >= high - 1:
                return entries
    finally:
        consumer.close()
