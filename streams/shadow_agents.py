"""Faust wiring of the shadow workflows: history events (from the history agent) and wf.telemetry
in; shadow.reservations, shadow.anomalies and the predictions, feedback, action_usage and
reservations tables out. The logic is in ``streams.shadow``; this module moves values around.

As with the mirrors, a batch is acked only once its commands and alerts are on the broker and its
rows in ClickHouse. Shadows live in memory: after a restart a run's shadow is made again from its
next event, and the forecaster relearns from the ``feedback`` table (``warm_up``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import EventT

from schemas.codec import Codec, CodecError
from schemas.records import telemetry_batches
from sinks.batcher import BatchingSink
from sinks.tables import (
    ACTION_USAGE,
    ANOMALIES,
    FEEDBACK,
    PREDICTIONS,
    RESERVATIONS,
    Located,
    anomaly_columns,
    columns_of,
    row_id,
)
from streams.agents import (
    all_done,
    now_ms,
    process_in_batches,
    publish_dead_letters,
    raw_message,
)
from streams.reservations import Alert, Command
from streams.shadow import Effects, ShadowWorkflows
from streams.sizing import TaskContext
from streams.telemetry import windows
from topology.settings import Settings

log = logging.getLogger(__name__)


class ShadowService:
    """The worker's shadow workflows and the topics and tables they write to."""

    def __init__(self, shadows: ShadowWorkflows, *, codec: Codec, sink: BatchingSink,
                 settings: Settings, reservation_topic: faust.TopicT,
                 anomaly_topic: faust.TopicT) -> None:
        self.shadows = shadows
        self.codec = codec
        self.sink = sink
        self.settings = settings
        self.reservation_topic = reservation_topic
        self.anomaly_topic = anomaly_topic

    async def apply(self, located: Sequence[Located]) -> asyncio.Future[None]:
        """Follow a batch of history events; the future resolves when their effects are
        published and stored."""
        effects = Effects()
        stamp = now_ms()
        for item in located:
            effects.extend(self.shadows.on_event(item.event, stamp))
        return await self.publish(effects)

    async def telemetry(self, batches: Sequence[Any]) -> asyncio.Future[None]:
        """Fold telemetry into the shadows and store its windows."""
        window_ms = int(self.settings.telemetry_window_seconds * 1000)
        rows = []
        for batch in batches:
            self.shadows.on_telemetry(batch.workflow_id, batch.run_id, batch.action_id,
                                      batch.memory_bytes, batch.cpu_cores, batch.network_bytes,
                                      batch.cost)
            rows += [(w.workflow_id, w.run_id, w.action_id, w.action_type, w.attempt,
                      w.window_start_ms, w.batch_first_ms, w.samples, w.cpu_peak, w.cpu_mean,
                      w.memory_peak, w.memory_mean, w.network_bytes, w.cost)
                     for w in windows(batch, window_ms)]
        if not rows:
            return all_done([])
        return await self.sink.submit(ACTION_USAGE, columns_of(ACTION_USAGE, rows))

    async def publish(self, effects: Effects) -> asyncio.Future[None]:
        """Send commands and alerts, store predictions, feedback, commands and alerts."""
        pending: list[asyncio.Future[Any]] = []
        for command in effects.commands:
            pending.append(await self.reservation_topic.send(
                key=command.reservation.workflow_id.encode(),
                value=self.codec.encode("ReservationCommand", _command_record(command)),
                force=True))
        stamp = now_ms()
        alerts = [_alert_record(alert, stamp) for alert in effects.alerts]
        for alert, record in zip(effects.alerts, alerts, strict=True):
            log.warning("%s %s %s/%s %s: %s", alert.severity, alert.kind, alert.workflow_id,
                        alert.run_id, alert.action_id, alert.message)
            pending.append(await self.anomaly_topic.send(
                key=alert.workflow_id.encode(), value=self.codec.encode("Anomaly", record),
                force=True))
        tables = [
            (RESERVATIONS, [_command_row(c) for c in effects.commands]),
            (PREDICTIONS, [(run.workflow_id, run.run_id, run.workflow_type, p.action_id,
                            p.action_type, int(p.likely), p.source, p.confidence,
                            p.allocation["memory_bytes"], p.allocation["cpu_cores"],
                            p.allocation["network_bytes"], p.allocation["cost"],
                            p.reservation_id or "", p.issued_ms)
                           for run, p in effects.predictions]),
            (FEEDBACK, [_feedback_row(f, self.shadows, stamp) for f in effects.feedback]),
        ]
        for spec, rows in tables:
            if rows:
                pending.append(await self.sink.submit(spec, columns_of(spec, rows)))
        if alerts:
            pending.append(await self.sink.submit(ANOMALIES, anomaly_columns(alerts)))
        return all_done(pending)

    async def tick(self) -> None:
        """Timer work: score forecasts whose telemetry had time to arrive, let unused
        reservations lapse, forget finished runs."""
        stamp = now_ms()
        effects = self.shadows.due_feedback(
            stamp, int(self.settings.feedback_grace_seconds * 1000))
        effects.commands += self.shadows.pool.expire(stamp)
        await self.publish(effects)
        self.shadows.evict_finished(stamp, self.settings.mirror_retention_ms)

    def warm_up(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Teach the forecaster from stored feedback rows (workflow_type, run_id, action_type,
        actual memory, actual CPU, actual network, actual cost, runtime), oldest first."""
        for workflow_type, run_id, action_type, memory, cpu, network, cost, runtime in rows:
            context = TaskContext(workflow_type, run_id, action_type)
            for resource, value in (("memory", memory), ("cpu", cpu), ("network", network),
                                    ("cost", cost)):
                self.shadows.forecaster.observe(context, resource, float(value), 0.0, runtime)
        return len(rows)


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


def _command_row(command: Command) -> tuple[Any, ...]:
    r = command.reservation
    return (command.command_id, command.op, r.reservation_id, r.workflow_id, r.run_id,
            r.action_id, r.action_type, r.amounts.get("memory_bytes", 0.0),
            r.amounts.get("cpu_cores", 0.0), r.amounts.get("network_bytes", 0.0),
            r.amounts.get("cost", 0.0), r.confidence, r.source, r.issued_ms, r.expires_ms,
            command.reason)


def _alert_record(alert: Alert, stamp: int) -> dict[str, Any]:
    identity = row_id(alert.kind, alert.workflow_id, alert.run_id, 0, alert.action_id)
    return {"anomaly_id": f"{identity:016x}", "workflow_id": alert.workflow_id,
            "run_id": alert.run_id, "sequence": 0, "kind": alert.kind,
            "severity": alert.severity, "score": 0.0, "detected_ms": stamp,
            "message": alert.message, "action_id": alert.action_id, "variables": []}


def _feedback_row(feedback: Any, shadows: ShadowWorkflows, stamp: int) -> tuple[Any, ...]:
    run = shadows.runs.get((feedback.workflow_id, feedback.run_id))
    action = run.actions.get(feedback.action_id) if run else None
    runtime = (((action.completed_ms or 0) - (action.started_ms or 0)) / 1000
               if action and action.started_ms is not None else 0.0)
    p, a = feedback.predicted, feedback.actual
    return (feedback.workflow_id, feedback.run_id, run.workflow_type if run else "",
            feedback.action_id, feedback.action_type, feedback.source, feedback.confidence,
            p.get("memory_bytes", 0.0), p.get("cpu_cores", 0.0), p.get("network_bytes", 0.0),
            p.get("cost", 0.0), a.get("memory_bytes", 0.0), a.get("cpu_cores", 0.0),
            a.get("network_bytes", 0.0), a.get("cost", 0.0), feedback.deviation,
            int(feedback.underprovisioned), max(0.0, runtime),
            -1 if feedback.lead_time_ms is None else feedback.lead_time_ms, stamp)


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def register_shadow_agents(app: faust.App, service: ShadowService, *, telemetry: faust.TopicT,
                           deadletters: faust.TopicT, settings: Settings) -> None:
    """The telemetry agent and the shadows' timer. History reaches the shadows through the
    history agent (``ShadowService.apply``)."""
    codec = service.codec

    async def handle(events: Sequence[EventT]) -> asyncio.Future[None]:
        batches, rejects = [], []
        for event in events:
            raw = raw_message(event)
            try:
                batches += telemetry_batches(codec.decode(raw.value or b""))
            except CodecError as exc:
                rejects.append(raw.dead_letter(str(exc), now_ms()))
        await publish_dead_letters(deadletters, rejects, codec)
        return await service.telemetry(batches)

    @app.agent(telemetry, name="telemetry")
    async def ingest_telemetry(stream: faust.StreamT) -> None:
        await process_in_batches(stream, settings, handle)

    @app.timer(interval=1.0)
    async def shadow_timer() -> None:
        await service.tick()
