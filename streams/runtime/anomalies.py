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
from streams.runtime.clock import now_ms
from streams.runtime.log_budget import LogBudget
from streams.runtime.metrics import stats_of
from streams.runtime.publish import send_all

log = logging.getLogger(__name__)


class AnomalyOutlet:
    """Publishes anomaly records to ``shadow.anomalies`` and stores them in ``anomalies``, and
    logs them within a budget per kind and severity (``LogBudget``: every record is still
    published, stored and counted in the metrics)."""

    def __init__(self, topic: faust.TopicT, sink: BatchingSink, codec: Codec) -> None:
        self._topic = topic
        self._sink = sink
        self._codec = codec
        self._budget = LogBudget()

    async def publish(self, records: Sequence[Mapping[str, Any]]) -> list[asyncio.Future[Any]]:
        """Send and store ``records``; returns the futures of their delivery and storage."""
        counts = stats_of(self._topic.app).anomalies
        for record in records:
            counts[(record["kind"], record["severity"])] += 1
            self._log(record)
        pending = await send_all(self._topic, [
            (record["workflow_id"].encode(), self._codec.encode("Anomaly", record), None)
            for record in records])
        if records:
            pending.append(await self._sink.submit(ANOMALIES, anomaly_columns(records)))
        return pending

    def _log(self, record: Mapping[str, Any]) -> None:
        held = self._budget.admit((record["kind"], record["severity"]), now_ms())
        if held is None:
            return
        since = (f" ({held} more {record['severity']} {record['kind']} not logged before this "
                 "one: see shadow.anomalies or the anomalies table)") if held else ""
        log.warning("anomaly %s %s %s/%s@%d %s: %s%s", record["severity"], record["kind"],
                    record["workflow_id"], record["run_id"], record["sequence"],
                    record.get("action_id") or "", record["message"], since)
