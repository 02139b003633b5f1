"""Faust wiring of the mirrors: history events (from the history agent) and wf.state in;
shadow.mirror, shadow.anomalies and the ``anomalies`` table out. The logic is in
``streams.mirror.registry``; this module moves values around.

Order of effects for a batch of history events (``MirrorService.apply``): events are applied, then
each touched run's snapshot or delta is sent to ``shadow.mirror``, comparisons that became possible
are scored and their anomalies sent and stored; the history agent acks the batch only when all of
that is on the broker and in ClickHouse. After a crash, a worker restores each partition's mirrors
from ``shadow.mirror`` before it processes that partition again; re-delivered events are then
duplicates and ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Hashable, Iterable, Sequence

import faust
from faust.types import EventT

from schemas.codec import Codec, CodecError, Decoded
from schemas.records import DeadLetter, StateSnapshot
from streams.mirror.changelog import changelog_keys, next_records, restore_all
from streams.mirror.registry import Finding, Mirrors, RunKey
from streams.runtime.anomalies import AnomalyOutlet
from streams.runtime.batches import BatchSettings, all_done, process_in_batches
from streams.runtime.clock import now_ms
from streams.runtime.deadletters import decode_or_dead_letter, publish_dead_letters
from streams.runtime.kafka import KafkaAddress
from streams.runtime.messages import Located, RawMessage
from streams.runtime.metrics import stats_of
from streams.runtime.publish import send_all
from streams.runtime.restore import Entries, PartitionRestorer, hand_over
from streams.runtime.upkeep import register_upkeep

log = logging.getLogger(__name__)


class MirrorService:
    """The worker's mirrors and the topics and table they write to."""

    def __init__(self, mirrors: Mirrors, *, codec: Codec, kafka: KafkaAddress,
                 mirror_topic: faust.TopicT, anomalies: AnomalyOutlet,
                 retention_ms: int) -> None:
        self.mirrors = mirrors
        self.codec = codec
        self.mirror_topic = mirror_topic
        self.anomalies = anomalies
        self.retention_ms = retention_ms
        self.restorer = PartitionRestorer(kafka, mirror_topic.get_topic_name(), codec,
                                          self._load, "mirrors")
        self._tokens = itertools.count()
        # Record deliveries not yet confirmed: a hand-over waits for them.
        self._in_flight: set[asyncio.Future[None]] = set()
        self._done: dict[Hashable, asyncio.Future[None]] = {}

    async def ensure_restored(self, partitions: Iterable[int]) -> set[int]:
        """Restore the mirrors of partitions not yet restored since they were assigned;
        returns those restored now (not those revoked meanwhile)."""
        return await self.restorer.ensure(partitions)

    def _load(self, partition: int, entries: Entries) -> int:
        restored = restore_all(entries, self.mirrors.limits)
        self.mirrors.load(restored, partition, now_ms())
        return len(restored)

    async def forget_partitions(self, partitions: Iterable[int]) -> None:
        """The worker no longer owns these partitions: once the records already sent are on
        the broker (``hand_over``), their mirrors are the new owner's."""
        partitions = set(partitions)
        await hand_over(list(self._in_flight), self.mirror_topic.app.producer, partitions,
                        "mirrors")
        self.restorer.forget(partitions)
        for token in self.mirrors.drop_partitions(partitions):
            self._finish(token)

    def wait_for_comparison(self, snapshot: StateSnapshot) -> asyncio.Future[None]:
        """Queue a primary snapshot; the future resolves once it is compared and any anomaly
        is on the broker and in ClickHouse (or it was given up)."""
        token = next(self._tokens)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done[token] = future
        self.mirrors.await_comparison(snapshot, now_ms(), token)
        return future

    async def settle(self, findings: list[Finding], done: Sequence[Hashable],
                     effects: Sequence[asyncio.Future[None]] = ()) -> asyncio.Future[None]:
        """Publish findings; return a future that resolves when they and ``effects`` are
        stored, resolving the comparisons ``done`` at the same moment."""
        stamp = now_ms()
        pending = list(effects)
        pending += await self.anomalies.publish([f.to_avro(stamp) for f in findings])
        combined = all_done(pending)
        tokens = list(done)
        combined.add_done_callback(lambda f: [self._finish(t, f.exception()) for t in tokens])
        return combined

    async def apply(self, located: Sequence[Located]) -> asyncio.Future[None]:
        """Apply a batch of history events; the future resolves when the mirror records and
        any anomalies they led to are stored."""
        owned = await self.ensure_restored({item.partition for item in located})
        findings: list[Finding] = []
        touched: set[RunKey] = set()
        stamp = now_ms()
        skipped = 0
        for item in located:
            if item.partition not in owned:  # revoked meanwhile: the new owner's to apply
                skipped += 1
                continue
            event = item.event
            if event.sequence > 1 and (event.workflow_id, event.run_id) not in self.mirrors.runs:
                log.warning("run %s/%s first seen at sequence %d (partition %d, offset %d): its "
                            "earlier events were neither consumed here nor restored",
                            event.workflow_id, event.run_id, event.sequence, item.partition,
                            item.offset)
            findings += self.mirrors.offer(item.event, item.partition, stamp)
            touched.add((item.event.workflow_id, item.event.run_id))
        if skipped:
            log.warning("%d events of partitions revoked during their batch left to their new "
                        "owner", skipped)
        effects = await self.persist(touched)
        more, done = self.mirrors.compare_ready()
        return await self.settle(findings + more, done, effects)

    async def persist(self, keys: Iterable[RunKey]) -> list[asyncio.Future[None]]:
        """Send each run's snapshot or delta to ``shadow.mirror``; returns the deliveries.
        Every record is made before the first is sent: a revocation while they are sent must
        not leave a run of the batch without its record (the batch is acked all the same)."""
        records = []
        for key in sorted(set(keys)):
            mirror = self.mirrors.runs.get(key)
            if mirror is None:
                continue
            partition = self.mirrors.partition_of[key]
            records += [(record_key, None if record is None
                         else self.codec.encode("MirrorRecord", record), partition)
                        for record_key, record in next_records(mirror)]
        deliveries = await send_all(self.mirror_topic, records)
        self._in_flight.update(deliveries)
        for delivery in deliveries:
            delivery.add_done_callback(self._in_flight.discard)
        return deliveries

    async def tick(self) -> None:
        """Timer work: gaps open too long, snapshots never reached, finished runs evicted."""
        findings, done = self.mirrors.expire(now_ms())
        more, done_too = self.mirrors.compare_ready()
        await self.settle(findings + more, [*done, *done_too])
        partition_of = dict(self.mirrors.partition_of)
        evicted = self.mirrors.evict_finished(now_ms(), self.retention_ms)
        stats_of(self.mirror_topic.app).evictions["mirror"] += len(evicted)
        await send_all(self.mirror_topic, [(record_key, None, partition_of.get(key))
                                           for key, mirror in evicted.items()
                                           for record_key in changelog_keys(mirror)])

    def _finish(self, token: Hashable, error: BaseException | None = None) -> None:
        future = self._done.pop(token, None)
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _snapshot(decoded: Decoded) -> list[StateSnapshot]:
    if decoded.type_name != "StateSnapshot":
        raise CodecError(f"expected StateSnapshot, got {decoded.type_name}")
    return [StateSnapshot.from_avro(decoded.record)]


def register_mirror_agents(app: faust.App, service: MirrorService, *, history: faust.TopicT,
                           state: faust.TopicT, deadletters: faust.TopicT,
                           settings: BatchSettings) -> None:
    """The comparison agent (state snapshots), the mirrors' timer and partition hand-over.
    History reaches the mirrors through the history agent (``MirrorService.apply``)."""
    codec = service.codec

    async def dead_letter(letters: Sequence[DeadLetter]) -> None:
        await publish_dead_letters(deadletters, letters, codec)

    async def handle(events: Sequence[EventT]) -> asyncio.Future[None]:
        decoded = decode_or_dead_letter([RawMessage.of(e) for e in events], codec, _snapshot,
                                        now_ms())
        waits = [service.wait_for_comparison(snapshot)
                 for _, snapshots in decoded.items for snapshot in snapshots]
        await publish_dead_letters(deadletters, decoded.rejects, codec)
        findings, done = service.mirrors.compare_ready()
        await service.settle(findings, done)
        return all_done(waits)

    @app.agent(state, name="compare")
    async def compare_state(stream: faust.StreamT) -> None:
        await process_in_batches(stream, settings, handle, dead_letter=dead_letter)

    register_upkeep(app, service, history=history, name="mirror")
