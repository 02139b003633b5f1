"""Reading a topic from the beginning with confluent-kafka, for reports and checks."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.codec import Decoded, default_codec
from topology.settings import Settings


def read_topic(settings: Settings, topic: str, idle_seconds: float = 2.0) -> list[Decoded]:
    """Every message now on ``topic``, decoded, read until none arrives for ``idle_seconds``.

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
            decoded.append(codec.decode(message.value()))
    finally:
        consumer.close()
    return decoded
