"""The shadows' telemetry path, with stand-ins for the broker and ClickHouse: a batch the early
telemetry buffer cannot hold comes back as a refusal naming its message, which the telemetry
agent dead-letters (``dead_letter_refused``), while its windows are stored as usual."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas.codec import default_codec
from schemas.records import TelemetryBatch
from streams.forecasting.forecaster import Forecaster
from streams.runtime.messages import RawMessage
from streams.shadow.agents import EARLY_OVERFLOW, ShadowService
from streams.shadow.pool import ReservationPool
from streams.shadow.workflows import ShadowWorkflows


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[Any, Any]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, *, key: Any, value: Any, **_: Any) -> asyncio.Future[None]:
        self.sent.append((key, value))
        return _done(None)


class _Sink:
    def __init__(self) -> None:
        self.rows = 0

    async def submit(self, spec: Any, columns: Any, origins: Any = None) -> asyncio.Future[Any]:
        self.rows += len(next(iter(columns.values()), [])) if isinstance(columns, dict) else 0
        return _done([])


class _Anomalies:
    async def publish(self, records: Any) -> list[asyncio.Future[Any]]:
        return []


def _done(value: Any) -> asyncio.Future[Any]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _batch(action: str) -> TelemetryBatch:
    return TelemetryBatch("wf", "r", action, "t", 1, [1_000, 2_000], [1.0, 1.0], [5, 7],
                          [0, 0], [0.0, 0.0])


def test_telemetry_the_early_buffer_cannot_hold_comes_back_to_be_dead_lettered() -> None:
    async def scenario() -> tuple[list, int]:
        shadows = ShadowWorkflows(Forecaster(), ReservationPool({}, 60_000))
        shadows.max_early_usage = 1
        service = ShadowService(
            shadows, codec=default_codec(), sink=_Sink(), kafka=None,  # type: ignore[arg-type]
            reservation_topic=_Topic("shadow.reservations"),  # type: ignore[arg-type]
            shadow_topic=_Topic("shadow.shadows"),  # type: ignore[arg-type]
            anomalies=_Anomalies(),  # type: ignore[arg-type]
            telemetry_window_ms=60_000, feedback_grace_ms=0, retention_ms=60_000)
        service.restorer.restored.add(0)
        messages = [RawMessage("wf.telemetry", 0, offset, b"wf", b"...") for offset in (7, 8)]
        stored = await service.telemetry([(messages[0], _batch("A1")),
                                          (messages[1], _batch("A2"))])
        return await stored, shadows.early_dropped

    refused, dropped = asyncio.run(scenario())
    assert dropped == 1
    assert [(r.origin.offset, r.reason) for r in refused] == [(8, EARLY_OVERFLOW)]
