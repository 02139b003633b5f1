"""The one way out for anomalies, whoever finds them (the mirrors' deviations, the shadows'
sizing alerts): ``shadow.anomalies`` and the ``anomalies`` table. The record itself is
``schemas.records.anomaly_record``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import faust

from schemas.codec import Codec
from sinks.batcher import BatchingSink
from sinks.tables import ANOMALIES, anomaly_columns
from streams.runtime.metrics import stats_of
from streams.runtime.publish import send_raw

log = logging.getLogger(__name__)


class AnomalyOutlet:
    """Publishes anomaly records to ``shadow.anomalies`` and stores them in ``anomalies``."""

    def __init__(self, topic: faust.TopicT, sink: BatchingSink, codec: Codec) -> None:
        self._topic = topic
        self._sink = sink
        self._codec = codec

    async def publish(self, records: Sequence[Mapping[str, Any]]) -> list[asyncio.Future[Any]]:
        """Send and store ``records``; returns the futures of their delivery and storage."""
        pending: list[asyncio.Future[Any]] = []
        counts = stats_of(self._topic.app).anomalies
        for record in records:
            counts[(record["kind"], record["severity"])] += 1
            log.warning("anomaly %s %s %s/%s@%d %s: %s", record["severity"], record["kind"],
                        record["workflow_id"], record["run_id"], record["sequence"],
                        record.get("action_id") or "", record["message"])
            pending.append(await send_raw(
                self._topic, record["workflow_id"].encode(), self._codec.encode("Anomaly", record)))
        if records:
            pending.append(await self._sink.submit(ANOMALIES, anomaly_columns(records)))
        return pending
