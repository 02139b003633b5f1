"""The history agent: ``wf.history`` decoded once, its events stored in ``workflow_events`` and
handed to every follower (the mirrors, the shadow workflows); bad messages become dead letters.
A batch is acked when all of that is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import faust
from faust.types import EventT

from schemas.codec import Codec
from schemas.records import DeadLetter, history_events
from sinks.batcher import BatchingSink
from sinks.tables import WORKFLOW_EVENTS, workflow_event_columns
from streams.runtime.batches import BatchSettings, Follower, all_done, process_in_batches
from streams.runtime.clock import now_ms
from streams.runtime.deadletters import (
    dead_letter_refused,
    decode_or_dead_letter,
    publish_dead_letters,
)
from streams.runtime.messages import Located, RawMessage
from streams.runtime.metrics import stats_of

FOLLOWER_STEP_EVENTS = 500
"""Most events handed to the followers in one step. A batch of envelopes can hold 100,000
events: in one step the event loop would be blocked for seconds (timers, acks and HTTP requests
waiting, reservation commands late) and one step's effects per run would be megabytes."""


@dataclass
class HistoryBatch:
    """The events of a batch of messages, in message order, and the messages that failed."""

    events: list[Located] = field(default_factory=list)
    rejects: list[DeadLetter] = field(default_factory=list)


def decode_history(messages: Sequence[RawMessage], codec: Codec, now_ms: int) -> HistoryBatch:
    """Decode each message; one that is not a valid history message becomes a dead letter
    naming the reason, and the others are unaffected."""
    decoded = decode_or_dead_letter(messages, codec, history_events, now_ms)
    events = [Located(e, message.partition, message.offset)
              for message, items in decoded.items for e in items]
    return HistoryBatch(events, decoded.rejects)


def register_history_agent(app: faust.App, *, source: faust.TopicT,
                           deadletters: faust.TopicT, sink: BatchingSink, codec: Codec,
                           settings: BatchSettings, followers: Sequence[Follower] = ()) -> None:
    """Add the history agent to ``app``."""

    async def dead_letter(letters: Sequence[DeadLetter]) -> None:
        await publish_dead_letters(deadletters, letters, codec)

    async def handle(events: Sequence[EventT]) -> asyncio.Future[None] | None:
        messages = {(m.partition, m.offset): m for m in map(RawMessage.of, events)}
        batch = decode_history(list(messages.values()), codec, now_ms())
        counts = stats_of(app).history_events
        for located in batch.events:
            counts[located.partition] += 1
        await publish_dead_letters(deadletters, batch.rejects, codec)
        if not batch.events:
            return None
        stored = await sink.submit(WORKFLOW_EVENTS, workflow_event_columns(batch.events),
                                   [messages[e.partition, e.offset] for e in batch.events])
        effects = [dead_letter_refused(deadletters, stored, codec)]
        for start in range(0, len(batch.events), FOLLOWER_STEP_EVENTS):
            if start:
                await asyncio.sleep(0)  # let timers, acks and HTTP requests in between steps
            for follower in followers:
                effects.append(await follower.apply(
                    batch.events[start:start + FOLLOWER_STEP_EVENTS]))
        return all_done(effects)

    @app.agent(source, name="history-ingest")
    async def ingest_history(stream: faust.StreamT) -> None:
        await process_in_batches(stream, settings, handle, dead_letter=dead_letter)
