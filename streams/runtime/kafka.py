"""shadowflow's Kafka clients outside the Faust app (confluent-kafka): a batching producer of its
Avro messages, and readers of a topic or a partition from the start, for reports, checks and
restoring state.

They take the bootstrap servers and partition count from any settings-like object
(``KafkaAddress``), so nothing here depends on where the configuration comes from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from schemas.codec import Codec, CodecError, Decoded, default_codec
from schemas.records import HistoryEvent, StateSnapshot, TelemetryBatch


class KafkaAddress(Protocol):
    """Where the broker is: what the clients here need of the settings."""

    broker: str
    """Bootstrap servers, comma-separated host:port."""
    partitions: int
    """Partitions of shadowflow's topics."""

    @property
    def kafka_config(self) -> dict[str, str]:
        """confluent-kafka configuration every client starts from: the bootstrap servers and
        the security settings (TLS, SASL)."""
        ...


def read_topic(settings: KafkaAddress, topic: str, idle_seconds: float = 2.0,
               skip_undecodable: bool = False) -> list[Decoded]:
    """Every message now on ``topic``, decoded, read until none arrives for ``idle_seconds``.
    A message that does not decode raises ``CodecError``, or is passed over with
    ``skip_undecodable`` (a topic that also carries what producers got wrong)."""
    return [decoded for decoded in follow_topic(settings, topic, idle_seconds,
                                                skip_undecodable, follow=False)
            if decoded is not None]


def follow_topic(settings: KafkaAddress, topic: str, idle_seconds: float = 2.0,
                 skip_undecodable: bool = False, follow: bool = True,
                 ) -> Iterator[Decoded | None]:
    """The messages of ``topic`` from its start, decoded, in each partition's order. With
    ``follow`` it never ends: ``None`` after every ``idle_seconds`` with no message, so the
    caller can act between messages; without, it ends at the first such pause.

    Uses ``assign`` rather than a group subscription: no group join to wait for, no offsets
    committed.
    """
    codec = default_codec()
    consumer = Consumer({**settings.kafka_config, "group.id": "shadowflow-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                     for p in range(settings.partitions)])
    try:
        while True:
            message = consumer.poll(idle_seconds)
            if message is None:
                if not follow:
                    return
                yield None
                continue
            if message.error() is not None:
                raise RuntimeError(f"reading {topic}: {message.error()}")
            try:
                yield codec.decode(message.value())
            except CodecError:
                if not skip_undecodable:
                    raise
    finally:
        consumer.close()


def read_partition(settings: KafkaAddress, topic: str, partition: int,
                   timeout: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every ``(key, value)`` of one partition, from its start to its end as of now (a
    tombstone has value ``None``)."""
    return read_partition_to_end(settings, topic, partition, timeout)[0]


TAIL_IDLE_SECONDS = 0.3
"""How long ``read_partition_to_end`` waits, once past the high watermark, for more messages."""


def read_partition_to_end(settings: KafkaAddress, topic: str, partition: int,
                          timeout: float = 30.0,
                          ) -> tuple[list[tuple[bytes | None, bytes | None]], int]:
    """``read_partition``, and the offset it read up to (where to follow on from).

    The high watermark is only where reading starts to end: after it, every message the broker
    still hands out is read too, until none comes for ``TAIL_IDLE_SECONDS``. Tansu reports as
    high watermark the first offset of the last record batch plus one, so the rest of that
    batch lies beyond it (measured: three records in one batch, watermark 1); a restore that
    stopped there would miss the last records written before a rebalance."""
    consumer = Consumer({**settings.kafka_config, "group.id": "shadowflow-reader",
                         "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        if high <= low:
            return [], high
        consumer.assign([TopicPartition(topic, partition, low)])
        entries: list[tuple[bytes | None, bytes | None]] = []
        end = low
        while True:
            past = end >= high
            message = consumer.poll(TAIL_IDLE_SECONDS if past else timeout)
            if message is None:
                if past:
                    return entries, end
                raise TimeoutError(f"{topic}[{partition}] stopped before offset {high - 1}")
            if message.error() is not None:
                raise RuntimeError(f"reading {topic}[{partition}]: {message.error()}")
            entries.append((message.key(), message.value()))
            end = message.offset() + 1
    finally:
        consumer.close()


T = TypeVar("T")


class PublishError(RuntimeError):
    """The broker did not take some messages."""


class Publisher:
    """A batching, idempotent producer; ``flush`` raises if any message was not delivered."""

    def __init__(self, settings: KafkaAddress, codec: Codec | None = None,
                 **config: Any) -> None:
        self.codec = codec or default_codec()
        self._producer = Producer({
            **settings.kafka_config, "linger.ms": 20, "acks": "all",
            # Kafka's Java default: workers route HTTP requests by the same hash.
            "partitioner": "murmur2_random",
            "enable.idempotence": True, "compression.type": "none",
            "queue.buffering.max.messages": 200_000, **config,
        })
        self._errors: list[str] = []
        self.sent = 0
        self.sent_to: Counter[str] = Counter()
        """Messages queued per topic."""

    def send(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        """Queue one message; waits for room when the local queue is full."""
        encoded_key = key.encode() if isinstance(key, str) else key
        while True:
            try:
                self._producer.produce(topic, value, encoded_key, on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(0.1)
        self.sent += 1
        self.sent_to[topic] += 1
        self._producer.poll(0)

    def send_history(self, events: Sequence[HistoryEvent], per_message: int = 500,
                     topic: str = "wf.history") -> int:
        """Send one workflow's events as envelopes of up to ``per_message`` events; returns
        the number of messages."""
        messages = 0
        for chunk in _chunks(events, per_message):
            workflow_id = chunk[0].workflow_id
            value = self.codec.encode("HistoryEnvelope", {
                "workflow_id": workflow_id, "events": [e.to_avro() for e in chunk]})
            self.send(topic, workflow_id, value)
            messages += 1
        return messages

    def send_telemetry(self, batches: Sequence[TelemetryBatch], per_message: int = 100,
                       topic: str = "wf.telemetry") -> int:
        """Send one workflow's telemetry batches as envelopes; returns the number of
        messages."""
        messages = 0
        for chunk in _chunks(batches, per_message):
            value = self.codec.encode("TelemetryEnvelope", {
                "workflow_id": chunk[0].workflow_id, "batches": [b.to_avro() for b in chunk]})
            self.send(topic, chunk[0].workflow_id, value)
            messages += 1
        return messages

    def send_state(self, snapshot: StateSnapshot, topic: str = "wf.state") -> None:
        """Send one primary state snapshot."""
        self.send(topic, snapshot.workflow_id, self.codec.encode("StateSnapshot",
                                                                 snapshot.to_avro()))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is delivered; ``PublishError`` otherwise."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} messages not delivered within {timeout:.0f}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise PublishError(f"{len(errors)} messages failed, first: {errors[0]}")

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
