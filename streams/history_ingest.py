"""Decoding a batch of ``wf.history`` messages into events, setting aside those that fail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.codec import Codec, CodecError
from schemas.records import DeadLetter, history_events
from sinks.tables import Located
from streams.messages import RawMessage


@dataclass
class HistoryBatch:
    """The events of a batch of messages, in message order, and the messages that failed."""

    events: list[Located] = field(default_factory=list)
    rejects: list[DeadLetter] = field(default_factory=list)


def decode_history(messages: Sequence[RawMessage], codec: Codec, now_ms: int) -> HistoryBatch:
    """Decode each message; one that is not a valid history message becomes a dead letter
    naming the reason, and the others are unaffected."""
    batch = HistoryBatch()
    for message in messages:
        if not message.value:
            batch.rejects.append(message.dead_letter("empty message value", now_ms))
            continue
        try:
            events = history_events(codec.decode(message.value))
        except CodecError as exc:
            batch.rejects.append(message.dead_letter(str(exc), now_ms))
            continue
        batch.events.extend(Located(e, message.partition, message.offset) for e in events)
    return batch
