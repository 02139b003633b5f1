"""Faust wiring of the shadow workflows: history events (from the history agent) and wf.telemetry
in; shadow.reservations, shadow.anomalies and the predictions, feedback, action_usage and
reservations tables out. The logic is in ``streams.shadow.workflows``; this module moves values
around.

A batch is acked only once the changed shadows' records are on ``shadow.shadows`` (from which a
partition's new owner restores them before processing it), and after them the commands, alerts
and outcomes they decided are on the broker and their rows in ClickHouse: the effects are
written first (a step record per partition, named by the records of their runs,
``streams.shadow.changelog``), then the run records, then the effects are sent; so a crash
between any two loses nothing and a restore never decides again what was already sent. What the
shadows learn goes to ``shadow.outcomes``, which every worker follows (``outcome_feed``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT

from schemas.codec import Codec
from schemas.records import DeadLetter, TelemetryBatch, telemetry_batches
from sinks.batcher import BatchingSink, Rejected
from sinks.tables import ACTION_USAGE, FEEDBACK, PREDICTIONS, RESERVATIONS, columns_of
from streams.runtime.anomalies import AnomalyOutlet
from streams.runtime.batches import BatchSettings, process_in_batches
from streams.runtime.clock import now_ms
from streams.runtime.deadletters import (
    dead_letter_refused,
    decode_or_dead_letter,
    publish_dead_letters,
)
from streams.runtime.kafka import KafkaAddress
from streams.runtime.messages import Located, RawMessage
from streams.runtime.metrics import stats_of
from streams.runtime.publish import Record, send_all
from streams.runtime.restore import Entries, PartitionRestorer, hand_over
from streams.runtime.upkeep import register_upkeep
from streams.shadow.changelog import (
    SEAL_EVERY,
    chunk_key,
    record_key,
    restore_all,
    seal_finished,
    shadow_record,
)
from streams.shadow.outbox import Outbox, Outgoing, RunKey, outgoing_by_run, step_records
from streams.shadow.outcomes import outcome_key
from streams.shadow.telemetry import window_columns, windows
from streams.shadow.workflows import Effects, ShadowWorkflows

log = logging.getLogger(__name__)

EARLY_OVERFLOW = ("early telemetry buffer full: the usage of too many actions not scheduled yet "
                  "is held; these samples were not folded into the action's usage (their "
                  "windows were stored)")
"""Why a telemetry batch is dead-lettered when ``ShadowWorkflows.on_telemetry`` refuses it."""


class ShadowService:
    """The worker's shadow workflows and the topics and tables they write to."""

    def __init__(self, shadows: ShadowWorkflows, *, codec: Codec, sink: BatchingSink,
                 kafka: KafkaAddress, reservation_topic: faust.TopicT,
                 outcome_topic: faust.TopicT, shadow_topic: faust.TopicT,
                 anomalies: AnomalyOutlet,
                 telemetry_window_ms: int, feedback_grace_ms: int, retention_ms: int,
                 seal_every: int = SEAL_EVERY) -> None:
        self.shadows = shadows
        self.codec = codec
        self.sink = sink
        self.reservation_topic = reservation_topic
        self.outcome_topic = outcome_topic
        self.shadow_topic = shadow_topic
        self.anomalies = anomalies
        self.telemetry_window_ms = telemetry_window_ms
        self.feedback_grace_ms = feedback_grace_ms
        self.retention_ms = retention_ms
        self.seal_every = seal_every
        self.restorer = PartitionRestorer(kafka, shadow_topic.get_topic_name(), codec,
                                          self._load, "shadows")
        self.outbox = Outbox()
        self.oversized_outboxes = 0
        """Step effects of a run sent without being written ahead, because they would not fit."""
        # Restored effects, written and sent again with the next step, by run: (partition,
        # effects); and the restored step records, tombstoned once those are written again.
        self._resend: dict[RunKey, list[tuple[int, Outgoing]]] = {}
        self._stale_steps: list[tuple[bytes, int]] = []
        # Sealed chunks per run held here, to tombstone with the run's record.
        self._chunks: dict[RunKey, int] = {}
        # Steps waiting to be written, in order, and the task writing them: a workflow's
        # commands keep their order, and records go out in the order the states were taken.
        self._queue: list[_Step] = []
        self._writer: asyncio.Future[None] | None = None
        self._confirming: set[asyncio.Future[None]] = set()
        self._issued: asyncio.Future[None] | None = None

    async def apply(self, located: Sequence[Located]) -> asyncio.Future[None]:
        """Follow a batch of history events; the future resolves when the changed shadows'
        records and then their effects are published and stored."""
        owned = await self.restorer.ensure({item.partition for item in located})
        effects = Effects()
        stamp = now_ms()
        for item in located:
            if item.partition not in owned:  # revoked meanwhile: the new owner's to apply
                continue
            effects.extend(self.shadows.on_event(item.event, stamp, item.partition,
                                                 item.offset))
        return await self.settle(effects)

    async def settle(self, effects: Effects) -> asyncio.Future[None]:
        """Write this step's effects (with those restored and not yet sent again) in step
        records, then the changed shadows' records naming them, and only then publish and store
        the effects: after a crash the new owner restores a state together with every effect it
        implies, sends those again, and never decides anew what a resource manager may already
        hold. Each step's effects are encoded and written once, however long they wait."""
        stats = stats_of(self.reservation_topic.app)
        stats.reservations.update(command.op for command in effects.commands)
        stats.forecasts.update(prediction.source for _, prediction in effects.predictions
                               if not prediction.likely)
        by_run = outgoing_by_run(effects, self.shadows, now_ms())
        resent, self._resend = self._resend, {}
        stale, self._stale_steps = self._stale_steps, []
        touched, forgotten = self.shadows.take_changes()
        entries = [(key, partition, out) for key, items in resent.items()
                   for partition, out in items]
        unplaced = []  # effects of runs with no partition known here: sent, not written ahead
        for key, out in by_run.items():
            partition = self._partition_of(key, forgotten)
            if partition is None:
                unplaced.append(out)
            else:
                entries.append((key, partition, out))
        step_id = uuid.uuid4().hex
        self.outbox.add(step_id, {key for key, _, _ in entries if key in self.shadows.runs})
        touched |= {key for key, _, _ in entries} & self.shadows.runs.keys()
        steps = self._step_records(step_id, entries)
        chunks = self._seal(sorted(touched))
        records: list[tuple[bytes, None, int]] = []
        for key, partition in sorted(forgotten.items()):
            # One more chunk key than counted: one written by a step whose record never
            # followed (a crash between the two) goes too.
            records += [(chunk_key(*key, index), None, partition)
                        for index in range(self._chunks.pop(key, -1) + 1)]
            records.append((record_key(*key), None, partition))
        records += [(key, None, partition) for key, partition in stale]
        sending = [out for _, _, out in entries] + unplaced
        loop = asyncio.get_running_loop()
        step = _Step(step_id, steps, chunks, sorted(touched), records, sending,
                     loop.create_future(), loop.create_future())
        self._issued = step.issued
        self._queue.append(step)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())
        return step.stored

    def _seal(self, keys: Sequence[RunKey]) -> list[tuple[bytes, bytes, int]]:
        """Sealed chunks of the finished actions gathered in these runs' records (written with
        the step records, before the run records that leave them out)."""
        chunks = []
        for key in keys:
            run = self.shadows.runs[key]
            chunk = seal_finished(run, self.seal_every)
            if chunk is not None:
                self.shadows.pool.forget_versions(*key, chunk.reservation_ids)
                self._chunks[key] = run.sealed_chunks
                chunks.append((chunk.key, self.codec.encode("ShadowRecord", chunk.record),
                               run.partition))
        return chunks

    def _partition_of(self, key: RunKey, forgotten: dict[RunKey, int]) -> int | None:
        run = self.shadows.runs.get(key)
        return run.partition if run is not None else forgotten.get(key)

    def _step_records(self, step_id: str, entries: list[tuple[RunKey, int, Outgoing]],
                      ) -> list[tuple[bytes, bytes, int]]:
        """A step's entries as encoded step records (``outbox.step_records``)."""
        packed = step_records(step_id, [(key, partition, key in self.shadows.runs, out)
                                        for key, partition, out in entries])
        for (workflow_id, run_id), piece in packed.unwritten:
            # A single record or row larger than a step record: sent unwritten, so a crash
            # before it is stored makes the new owner decide it anew.
            self.oversized_outboxes += 1
            log.warning("an effect of %s/%s is %d bytes, more than a step record holds: sent "
                        "without being written ahead (%d times so far)", workflow_id, run_id,
                        len(piece.text()), self.oversized_outboxes)
        return [(key, self.codec.encode("ShadowRecord", record), partition)
                for key, record, partition in packed.records]

    async def _write(self) -> None:
        """Write the queued steps, all those waiting at once (group commit: one round trip per
        wave for the lot, and each run's latest record only), then send their effects in
        order. A step's records go out only after every earlier step's did."""
        while self._queue:
            group, self._queue = self._queue, []
            try:
                waves = [[record for step in group for record in [*step.steps, *step.chunks]],
                         self._latest_records(group)]
                for wave in waves:  # each on the broker before the next is sent
                    for delivery in await send_all(self.shadow_topic, wave):
                        await delivery
                for step in group:
                    pending = await self._send(step.sending)
                    step.issued.set_result(None)
                    confirming = asyncio.ensure_future(self._confirm(step, pending))
                    self._confirming.add(confirming)
                    confirming.add_done_callback(self._confirming.discard)
            except BaseException as exc:
                # Nothing later may go out before what failed: every step not yet sent fails.
                for step in [*group, *self._queue]:
                    if not step.issued.done():
                        step.fail(exc)
                self._queue = []
                log.error("writing the shadows' records or sending their effects failed (%r); "
                          "the batches they came from fail with it", exc)
                return

    def _latest_records(self, group: Sequence[_Step]) -> list[tuple[bytes, bytes | None, int]]:
        """The records of the runs a group of steps touched, each encoded once, from the state
        now, and the group's tombstones. Now (the group just taken, nothing awaited since) the
        state reflects exactly the steps written so far and these: a record never names or
        reflects a step whose effects are not written ahead of it."""
        tombstones: dict[bytes, int] = {}  # by key, the partition
        touched: dict[bytes, RunKey] = {}
        for step in group:
            for key, _, partition in step.records:
                tombstones[key] = partition
                touched.pop(key, None)
            for run in step.touched:
                touched[record_key(*run)] = run
                tombstones.pop(record_key(*run), None)
        return [*((key, None, partition) for key, partition in tombstones.items()),
                *((key, self._record(run), self.shadows.runs[run].partition)
                  for key, run in touched.items() if run in self.shadows.runs)]

    async def _confirm(self, step: _Step, pending: list[asyncio.Future[Any]]) -> None:
        """Once a step's effects are stored: it is confirmed, its step records tombstoned (a
        lost tombstone only makes a restore send them again)."""
        try:
            for future in pending:
                await future
            self.outbox.confirm(step.step_id)
            await send_all(self.shadow_topic,
                           [(key, None, partition) for key, _, partition in step.steps])
        except BaseException as exc:
            step.fail(exc)
            return
        step.stored.set_result(None)

    async def _send(self, sending: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
        """Publish the commands, outcomes and alerts and submit the rows; returns the futures
        of their delivery and storage."""
        rows: dict[str, list[dict[str, Any]]] = {}
        alerts = []
        commands: list[Record] = []
        outcomes: list[Record] = []
        for out in sending:
            commands += [(command["workflow_id"].encode(),
                          self.codec.encode("ReservationCommand", command), None)
                         for command in out.commands]
            outcomes += [(outcome_key(outcome), self.codec.encode("ActionOutcome", outcome), None)
                         for outcome in out.outcomes]
            alerts += out.alerts
            for table, table_rows in out.rows.items():
                rows.setdefault(table, []).extend(table_rows)
        pending = [*await send_all(self.reservation_topic, commands),
                   *await send_all(self.outcome_topic, outcomes),
                   *await self.anomalies.publish(alerts)]
        for table, table_rows in rows.items():
            spec = SHADOW_TABLES[table]
            pending.append(await self.sink.submit(spec, columns_of(spec, table_rows)))
        return pending

    def _record(self, key: RunKey) -> bytes:
        run = self.shadows.runs[key]
        pool = self.shadows.pool
        return self.codec.encode("ShadowRecord", shadow_record(
            run, pool.reservations_of(*key), pool.versions_of(*key),
            self.shadows.transitions.of_type(run.workflow_type), self.outbox.steps_of(key)))

    def _load(self, partition: int, entries: Entries) -> int:
        restored = restore_all(entries)
        stamp = now_ms()
        for item in restored.runs:
            self.shadows.transitions.merge(item.run.workflow_type, item.transitions)
            self.shadows.load(item.run, item.reservations, item.versions, stamp)
            if item.run.sealed_chunks:
                self._chunks[(item.run.workflow_id, item.run.run_id)] = item.run.sealed_chunks
        for entry in restored.resend:
            self._resend.setdefault((entry.workflow_id, entry.run_id), []).append(
                (partition, Outgoing.from_json([entry.outgoing])))
        self._stale_steps += [(key, partition) for key in restored.steps]
        if restored.missing_chunks:
            log.error("partition %d: %d sealed chunks of finished actions counted by run records "
                      "were not found on the changelog: repeated events of those actions would "
                      "not be recognised", partition, restored.missing_chunks)
        if restored.orphans:
            log.info("partition %d: %d runs' effects written by a step whose run records never "
                     "followed were dropped (decided again from the input)", partition,
                     restored.orphans)
        return len(restored.runs)

    async def forget_partitions(self, partitions: Iterable[int]) -> None:
        """The worker no longer owns these partitions: their shadows and what they hold are
        the new owner's (restored from their records there, outboxes included). The steps
        already decided first write their records and hand their effects to the producer,
        which is flushed (each wait bounded): the new owner then
        restores what they decided, and no effect of this worker trails in after it
        (``streams.runtime.restore.hand_over``)."""
        partitions = set(partitions)
        await hand_over([self._issued] if self._issued is not None else [],
                        self.reservation_topic.app.producer, partitions, "shadows")
        self.restorer.forget(partitions)
        gone = self.shadows.drop_partitions(partitions)
        self.outbox.forget(gone)
        for key in gone:
            self._chunks.pop(key, None)
        self._resend = {key: [(p, out) for p, out in items if p not in partitions]
                        for key, items in self._resend.items()}
        self._stale_steps = [(k, p) for k, p in self._stale_steps if p not in partitions]

    async def telemetry(self, batches: Sequence[tuple[RawMessage, TelemetryBatch]],
                        ) -> asyncio.Future[list[Rejected]]:
        """Fold telemetry into the shadows and store its windows, then the changed shadows'
        records. ``batches`` are (origin message, batch) pairs: the origin's partition says
        whose shadows they are, and the sink hands it back with any rows ClickHouse refused."""
        owned = await self.restorer.ensure({origin.partition for origin, _ in batches})
        made, origins, overflow = [], [], []
        for origin, batch in batches:
            # A partition revoked meanwhile is the new owner's to fold.
            if origin.partition in owned and not self.shadows.on_telemetry(
                    batch.workflow_id, batch.run_id, batch.action_id, batch.memory_bytes,
                    batch.cpu_cores, batch.network_bytes, batch.cost, origin.offset):
                overflow.append(Rejected(origin, EARLY_OVERFLOW))
            # Windows are a function of the batch alone: stored again when consumed again.
            folded = windows(batch, self.telemetry_window_ms)
            made += folded
            origins += [origin] * len(folded)
        stored = await self.sink.submit(ACTION_USAGE, window_columns(made, ACTION_USAGE.columns),
                                        origins)
        if overflow:
            log.warning("early telemetry buffer full: %d batches dead-lettered (%d so far)",
                        len(overflow), self.shadows.early_dropped)
        persisted = await self.settle(Effects())
        return asyncio.ensure_future(_then(persisted, stored, overflow))

    async def tick(self) -> None:
        """Timer work: score forecasts whose telemetry had time to arrive, let unused
        reservations lapse, forget finished runs."""
        stamp = now_ms()
        effects = self.shadows.due_feedback(stamp, self.feedback_grace_ms)
        expired = self.shadows.pool.expire(stamp)
        for command in expired:
            self.shadows.touch((command.reservation.workflow_id, command.reservation.run_id))
        effects.commands += expired
        gone = self.shadows.evict_finished(stamp, self.retention_ms)
        stats_of(self.reservation_topic.app).evictions["shadow"] += len(gone)
        await self.settle(effects)


@dataclass
class _Step:
    """A step waiting to be written: its step records and sealed chunks, the runs whose records
    follow them and its tombstones, the effects to send after them; ``issued`` resolves once
    the records are written and the effects handed to the producer, ``stored`` once the effects
    are stored."""

    step_id: str
    steps: list[tuple[bytes, bytes, int]]
    chunks: list[tuple[bytes, bytes, int]]
    """Sealed chunks, written with the step records (never tombstoned with them)."""
    touched: list[RunKey]
    """Runs whose records follow: encoded when the step is written, once for all the steps
    written together (a run touched by every step of a long batch is encoded once a wave)."""
    records: list[tuple[bytes, None, int]]
    """Tombstones of forgotten runs, their sealed chunks and stale step records."""
    sending: list[Outgoing]
    issued: asyncio.Future[None]
    stored: asyncio.Future[None]

    def fail(self, exc: BaseException) -> None:
        for future in (self.issued, self.stored):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: the history batch's own future reports it

SHADOW_TABLES = {spec.name: spec for spec in (RESERVATIONS, PREDICTIONS, FEEDBACK)}
"""The tables the shadows' outboxes write rows to, by name."""


def register_shadow_agents(app: faust.App, service: ShadowService, *, history: faust.TopicT,
                           telemetry: faust.TopicT, deadletters: faust.TopicT,
                           settings: BatchSettings) -> None:
    """The telemetry agent and the shadows' timer. History reaches the shadows through the
    history agent (``ShadowService.apply``)."""
    codec = service.codec

    async def dead_letter(letters: Sequence[DeadLetter]) -> None:
        await publish_dead_letters(deadletters, letters, codec)

    async def handle(events: Sequence[EventT]) -> asyncio.Future[None]:
        decoded = decode_or_dead_letter([RawMessage.of(e) for e in events], codec,
                                        telemetry_batches, now_ms())
        await publish_dead_letters(deadletters, decoded.rejects, codec)
        stored = await service.telemetry(
            [(message, b) for message, items in decoded.items for b in items])
        return dead_letter_refused(deadletters, stored, codec)

    @app.agent(telemetry, name="telemetry")
    async def ingest_telemetry(stream: faust.StreamT) -> None:
        await process_in_batches(stream, settings, handle, dead_letter=dead_letter)

    register_upkeep(app, service, history=history, name="shadow")


async def _then(first: asyncio.Future[None], result: asyncio.Future[list[Rejected]],
                more: Sequence[Rejected] = ()) -> list[Rejected]:
    """``result``'s value and ``more``, once ``first`` resolved too."""
    await first
    return [*await result, *more]
