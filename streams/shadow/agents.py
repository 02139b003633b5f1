"""Faust wiring of the shadow workflows: history events (from the history agent) and wf.telemetry
in; shadow.reservations, shadow.anomalies and the predictions, feedback, action_usage and
reservations tables out. The logic is in ``streams.shadow.workflows``; this module moves values
around.

As with the mirrors, a batch is acked only once its commands, alerts and outcomes are on the
broker, its rows in ClickHouse, and then the changed shadows' records on ``shadow.shadows``,
from which a partition's new owner restores them before processing it. What the shadows learn
goes to ``shadow.outcomes``, which every worker follows (``outcome_feed``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import faust
from faust.types import EventT

from schemas.codec import Codec
from schemas.records import (
    RESOURCE_CLASSES,
    DeadLetter,
    TelemetryBatch,
    anomaly_record,
    telemetry_batches,
)
from sinks.batcher import BatchingSink, Rejected
from sinks.tables import ACTION_USAGE, FEEDBACK, PREDICTIONS, RESERVATIONS, columns_of
from streams.runtime.anomalies import AnomalyOutlet
from streams.runtime.batches import BatchSettings, all_done, process_in_batches
from streams.runtime.clock import now_ms
from streams.runtime.deadletters import (
    dead_letter_refused,
    decode_or_dead_letter,
    publish_dead_letters,
)
from streams.runtime.kafka import KafkaAddress
from streams.runtime.messages import Located, RawMessage
from streams.runtime.restore import Entries, PartitionRestorer
from streams.runtime.upkeep import register_upkeep
from streams.shadow.changelog import record_key, restore_all, shadow_record
from streams.shadow.outcomes import outcome_key
from streams.shadow.pool import Alert, Command
from streams.shadow.telemetry import windows
from streams.shadow.workflows import Effects, Feedback, Prediction, RunShadow, ShadowWorkflows

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
                 telemetry_window_ms: int, feedback_grace_ms: int, retention_ms: int) -> None:
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
        self.restorer = PartitionRestorer(kafka, shadow_topic.get_topic_name(), codec,
                                          self._load, "shadows")
        self._persisted: asyncio.Future[None] | None = None

    async def apply(self, located: Sequence[Located]) -> asyncio.Future[None]:
        """Follow a batch of history events; the future resolves when their effects are
        published and stored, and then the changed shadows' records."""
        await self.restorer.ensure({item.partition for item in located})
        effects = Effects()
        stamp = now_ms()
        for item in located:
            effects.extend(self.shadows.on_event(item.event, stamp, item.partition))
        return await self.settle(effects)

    async def settle(self, effects: Effects) -> asyncio.Future[None]:
        """Publish and store ``effects``, then the records of the shadows changed so far: a
        record never runs ahead of the effects it implies, so after a crash the new owner
        restores a state whose commands and rows were all delivered, and the events after it
        are consumed again and make the same commands (same ids)."""
        stored = await self.publish(effects)
        touched, forgotten = self.shadows.take_changes()
        records: list[tuple[bytes, bytes | None, int]] = [
            (record_key(*key), self._record(key), self.shadows.runs[key].partition)
            for key in sorted(touched)]
        records += [(record_key(*key), None, partition)
                    for key, partition in sorted(forgotten.items())]
        previous = self._persisted
        self._persisted = asyncio.ensure_future(self._persist(previous, stored, records))
        return self._persisted

    async def _persist(self, previous: asyncio.Future[None] | None, stored: asyncio.Future[None],
                       records: list[tuple[bytes, bytes | None, int]]) -> None:
        if previous is not None:  # records go out in the order the states were taken
            await previous
        await stored
        deliveries = [await self.shadow_topic.send(key=key, value=value, partition=partition,
                                                   force=True)
                      for key, value, partition in records]
        for delivery in deliveries:
            await delivery

    def _record(self, key: tuple[str, str]) -> bytes:
        run = self.shadows.runs[key]
        pool = self.shadows.pool
        return self.codec.encode("ShadowRecord", shadow_record(
            run, pool.reservations_of(*key), pool.versions_of(*key),
            self.shadows.transitions.of_type(run.workflow_type)))

    def _load(self, partition: int, entries: Entries) -> int:
        restored = restore_all(entries)
        stamp = now_ms()
        for item in restored:
            self.shadows.transitions.merge(item.run.workflow_type, item.transitions)
            self.shadows.load(item.run, item.reservations, item.versions, stamp)
        return len(restored)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """The worker no longer owns these partitions: their shadows and what they hold are
        the new owner's (restored from their records there)."""
        partitions = set(partitions)
        self.restorer.forget(partitions)
        self.shadows.drop_partitions(partitions)

    async def telemetry(self, batches: Sequence[tuple[RawMessage, TelemetryBatch]],
                        ) -> asyncio.Future[list[Rejected]]:
        """Fold telemetry into the shadows and store its windows, then the changed shadows'
        records. ``batches`` are (origin message, batch) pairs: the origin's partition says
        whose shadows they are, and the sink hands it back with any rows ClickHouse refused."""
        await self.restorer.ensure({origin.partition for origin, _ in batches})
        rows, origins, overflow = [], [], []
        for origin, batch in batches:
            if not self.shadows.on_telemetry(batch.workflow_id, batch.run_id, batch.action_id,
                                             batch.memory_bytes, batch.cpu_cores,
                                             batch.network_bytes, batch.cost):
                overflow.append(Rejected(origin, EARLY_OVERFLOW))
            made = [asdict(w) for w in windows(batch, self.telemetry_window_ms)]
            rows += made
            origins += [origin] * len(made)
        stored = await self.sink.submit(ACTION_USAGE, columns_of(ACTION_USAGE, rows), origins)
        if overflow:
            log.warning("early telemetry buffer full: %d batches dead-lettered (%d so far)",
                        len(overflow), self.shadows.early_dropped)
        persisted = await self.settle(Effects())
        return asyncio.ensure_future(_then(persisted, stored, overflow))

    async def publish(self, effects: Effects) -> asyncio.Future[None]:
        """Send commands and alerts, store predictions, feedback, commands and alerts."""
        pending: list[asyncio.Future[Any]] = []
        for command in effects.commands:
            pending.append(await self.reservation_topic.send(
                key=command.reservation.workflow_id.encode(),
                value=self.codec.encode("ReservationCommand", _command_record(command)),
                force=True))
        for outcome in effects.outcomes:
            pending.append(await self.outcome_topic.send(
                key=outcome_key(outcome), value=self.codec.encode("ActionOutcome", outcome),
                force=True))
        stamp = now_ms()
        pending += await self.anomalies.publish([_alert_record(a, stamp) for a in effects.alerts])
        tables = [
            (RESERVATIONS, [_command_row(c) for c in effects.commands]),
            (PREDICTIONS, [_prediction_row(run, p) for run, p in effects.predictions]),
            (FEEDBACK, [_feedback_row(f, self.shadows, stamp) for f in effects.feedback]),
        ]
        for spec, rows in tables:
            if rows:
                pending.append(await self.sink.submit(spec, columns_of(spec, rows)))
        return all_done(pending)

    async def tick(self) -> None:
        """Timer work: score forecasts whose telemetry had time to arrive, let unused
        reservations lapse, forget finished runs."""
        stamp = now_ms()
        effects = self.shadows.due_feedback(stamp, self.feedback_grace_ms)
        expired = self.shadows.pool.expire(stamp)
        for command in expired:
            self.shadows.touch((command.reservation.workflow_id, command.reservation.run_id))
        effects.commands += expired
        self.shadows.evict_finished(stamp, self.retention_ms)
        await self.settle(effects)



def _command_record(command: Command) -> dict[str, Any]:
    r = command.reservation
    return {"command_id": command.command_id, "reservation_id": r.reservation_id,
            "op": command.op, "workflow_id": r.workflow_id, "run_id": r.run_id,
            "action_id": r.action_id, "action_type": r.action_type,
            "resources": {"cpu_cores": r.amounts.get("cpu_cores"),
                          "memory_bytes": _int(r.amounts.get("memory_bytes")),
                          "network_bytes": _int(r.amounts.get("network_bytes")),
                          "cost": r.amounts.get("cost")},
            "confidence": r.confidence, "source": r.source, "issued_ms": r.issued_ms,
            "expires_ms": r.expires_ms}


def _command_row(command: Command) -> dict[str, Any]:
    r = command.reservation
    amounts = {name: r.amounts.get(name, 0.0) for name in RESOURCE_CLASSES}
    return {"command_id": command.command_id, "op": command.op,
            "reservation_id": r.reservation_id, "workflow_id": r.workflow_id,
            "run_id": r.run_id, "action_id": r.action_id, "action_type": r.action_type,
            **amounts, "confidence": r.confidence, "source": r.source,
            "issued_ms": r.issued_ms, "expires_ms": r.expires_ms, "reason": command.reason}


def _prediction_row(run: RunShadow, p: Prediction) -> dict[str, Any]:
    return {"workflow_id": run.workflow_id, "run_id": run.run_id,
            "workflow_type": run.workflow_type, "action_id": p.action_id,
            "action_type": p.action_type, "predicted_next": int(p.likely), "source": p.source,
            "confidence": p.confidence,
            **{name: p.allocation[name] for name in RESOURCE_CLASSES},
            "reservation_id": p.reservation_id or "", "issued_ms": p.issued_ms}


def _alert_record(alert: Alert, stamp: int) -> dict[str, Any]:
    return anomaly_record(kind=alert.kind, severity=alert.severity,
                          workflow_id=alert.workflow_id, run_id=alert.run_id, sequence=0,
                          score=0.0, message=alert.message, detected_ms=stamp,
                          action_id=alert.action_id)


def _feedback_row(feedback: Feedback, shadows: ShadowWorkflows, stamp: int) -> dict[str, Any]:
    run = shadows.runs.get((feedback.workflow_id, feedback.run_id))
    action = run.actions.get(feedback.action_id) if run else None
    runtime = (((action.completed_ms or 0) - (action.started_ms or 0)) / 1000
               if action and action.started_ms is not None else 0.0)
    return {"workflow_id": feedback.workflow_id, "run_id": feedback.run_id,
            "workflow_type": run.workflow_type if run else "",
            "action_id": feedback.action_id, "action_type": feedback.action_type,
            "source": feedback.source, "confidence": feedback.confidence,
            **{f"predicted_{name}": feedback.predicted.get(name, 0.0)
               for name in RESOURCE_CLASSES},
            **{f"actual_{name}": feedback.actual.get(name, 0.0) for name in RESOURCE_CLASSES},
            "deviation": feedback.deviation, "underprovisioned": int(feedback.underprovisioned),
            "runtime_s": max(0.0, runtime),
            "lead_time_ms": -1 if feedback.lead_time_ms is None else feedback.lead_time_ms,
            "recorded_ms": stamp}


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


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
