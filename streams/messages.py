"""Kafka messages as plain values, and what becomes of one that cannot be processed."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import DeadLetter


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A consumed message, undecoded, with its origin."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def dead_letter(self, reason: str, now_ms: int) -> DeadLetter:
        """The dead letter that keeps this message whole, with ``reason`` and its origin."""
        return DeadLetter(self.value or b"", self.key, reason, self.topic, self.partition,
                          self.offset, now_ms)
