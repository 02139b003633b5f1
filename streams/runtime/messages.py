"""Kafka messages as plain values: a consumed message with its origin, and an event with the
message that carried it."""

from __future__ import annotations

from dataclasses import dataclass

from faust.types import EventT

from schemas.records import DeadLetter, HistoryEvent


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A consumed message, undecoded, with its origin."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, event: EventT) -> RawMessage:
        """The consumed Kafka message behind a Faust event."""
        message = event.message
        return cls(message.topic, message.partition, message.offset, message.key, message.value)

    def dead_letter(self, reason: str, now_ms: int) -> DeadLetter:
        """The dead letter that keeps this message whole, with ``reason`` and its origin."""
        return DeadLetter(self.value or b"", self.key, reason, self.topic, self.partition,
                          self.offset, now_ms)


@dataclass(frozen=True, slots=True)
class Located:
    """A history event with the partition and offset of the message that carried it."""

    event: HistoryEvent
    partition: int
    offset: int
