"""Following ``shadow.outcomes``: what every worker learned, for this one to learn too.

At start the worker reads the topic to its end (``read_outcomes``) and learns it all before it
takes its first event, as a restarted worker must; then a daemon thread follows on from there,
handing each record to the event loop, where the shadows learn it (``learn_shared``: a worker
skips what it published itself).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas.codec import Codec, CodecError
from streams.runtime.kafka import KafkaAddress, read_partition_to_end

log = logging.getLogger(__name__)

Outcome = Mapping[str, Any]


def read_outcomes(settings: KafkaAddress, topic: str,
                  codec: Codec) -> tuple[list[Outcome], dict[int, int]]:
    """Every ``ActionOutcome`` on ``topic`` now, oldest first per partition, and the offsets
    to follow on from."""
    records: list[Outcome] = []
    ends: dict[int, int] = {}
    for partition in range(settings.partitions):
        entries, ends[partition] = read_partition_to_end(settings, topic, partition)
        records += [r for _, value in entries if value is not None
                    and (r := _decode(codec, value)) is not None]
    return records, ends


class OutcomeFeed:
    """Follows the outcomes topic from given offsets on a daemon thread."""

    def __init__(self, settings: KafkaAddress, topic: str, codec: Codec,
                 learn: Callable[[Outcome], bool], start: Mapping[int, int]) -> None:
        self._settings = settings
        self._topic = topic
        self._codec = codec
        self._learn = learn
        self._start = dict(start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outcome-feed", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start following; records are learned on ``loop``."""
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        """Stop following (returns at once; the thread ends within a second)."""
        self._stop.set()

    def _run(self) -> None:
        consumer = Consumer({**self._settings.kafka_config,
                             "group.id": "shadowflow-outcomes", "enable.auto.commit": False})
        consumer.assign([TopicPartition(self._topic, p, self._start.get(p, 0))
                         for p in range(self._settings.partitions)])
        try:
            while not self._stop.is_set():
                # In batches, handed over in one call: a call per record woke the event loop
                # once per action outcome, mostly this worker's own (skipped there).
                records = [record for message in consumer.consume(FEED_BATCH, 1.0)
                           if message.error() is None and message.value() is not None
                           and (record := _decode(self._codec, message.value())) is not None]
                if records and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._learn_all, records)
        finally:
            consumer.close()

    def _learn_all(self, records: list[Outcome]) -> None:
        for record in records:
            self._learn(record)


FEED_BATCH = 500
"""Most outcomes the feed hands to the event loop at once."""


def _decode(codec: Codec, value: bytes) -> Outcome | None:
    try:
        decoded = codec.decode(value)
    except CodecError as exc:
        log.warning("skipping an undecodable outcome: %s", exc)
        return None
    return decoded.record if decoded.type_name == "ActionOutcome" else None
