"""Bad messages as a stream of their own: one step every input agent shares decodes each
message and sets aside, as a dead letter with the reason and its origin, every message that
fails; the dead letters are then published before the batch is acked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import faust

from schemas.codec import Codec, CodecError, Decoded
from schemas.records import DeadLetter
from sinks.batcher import Rejected
from streams.runtime import clock
from streams.runtime.messages import RawMessage
from streams.runtime.metrics import reason_label, stats_of
from streams.runtime.publish import send_all
from streams.runtime.validation import violation

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class DecodedBatch(Generic[T]):
    """What a batch of messages decoded to, in message order, and the messages that failed."""

    items: list[tuple[RawMessage, list[T]]] = field(default_factory=list)
    rejects: list[DeadLetter] = field(default_factory=list)


def decode_or_dead_letter(messages: Sequence[RawMessage], codec: Codec,
                          unpack: Callable[[Decoded], list[T]],
                          now_ms: int) -> DecodedBatch[T]:
    """Decode each message and ``unpack`` it into records; a message that is empty, not a valid
    Avro message, not of a type ``unpack`` accepts (it raises ``CodecError``) or holds a record
    outside the documented ranges, or under a key that is not its workflow id
    (``streams.runtime.validation``), becomes a dead letter naming the reason (and the field),
    and the others are unaffected."""
    batch: DecodedBatch[T] = DecodedBatch()
    for message in messages:
        if not message.value:
            batch.rejects.append(message.dead_letter("empty message value", now_ms))
            continue
        try:
            records = unpack(codec.decode(message.value))
        except CodecError as exc:
            batch.rejects.append(message.dead_letter(str(exc), now_ms))
            continue
        wrong = violation(message.key, records)
        if wrong is not None:
            batch.rejects.append(message.dead_letter(str(wrong), now_ms))
            continue
        batch.items.append((message, records))
    return batch


async def publish_dead_letters(topic: faust.TopicT, letters: Sequence[DeadLetter],
                               codec: Codec) -> None:
    """Send dead letters and wait until the broker has them all."""
    counts = stats_of(topic.app).dead_letters
    for letter in letters:
        counts[reason_label(letter.reason)] += 1
        log.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition,
                    letter.offset, letter.reason)
    for delivery in await send_all(topic, [
            (letter.key, codec.encode("DeadLetter", letter.to_avro()), None)
            for letter in letters]):
        await delivery


def dead_letter_refused(topic: faust.TopicT, stored: asyncio.Future[list[Rejected]],
                        codec: Codec) -> asyncio.Future[None]:
    """A future that resolves once the rows behind ``stored`` are stored and the messages of
    the rows ClickHouse refused for good (their origins, ``RawMessage``s) are dead letters on
    the broker: the rest of the batch goes on, and nothing is acked before its letter is out."""

    async def settle() -> None:
        refused = await stored
        letters: dict[tuple[str, int, int], DeadLetter] = {}
        for row in refused:
            if isinstance(row.origin, RawMessage):
                origin = row.origin
                letters.setdefault((origin.topic, origin.partition, origin.offset),
                                   origin.dead_letter(row.reason, clock.now_ms()))
            else:
                log.error("a row without an origin was refused by ClickHouse: %s", row.reason)
        await publish_dead_letters(topic, list(letters.values()), codec)

    return asyncio.ensure_future(settle())
