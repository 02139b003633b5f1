"""Every Kafka topic shadowflow reads or writes, declared once, and their idempotent creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from topology.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000

HISTORY = "wf.history"
TELEMETRY = "wf.telemetry"
STATE = "wf.state"
RESERVATIONS = "shadow.reservations"
ANOMALIES = "shadow.anomalies"
MIRROR = "shadow.mirror"
SHADOWS = "shadow.shadows"
OUTCOMES = "shadow.outcomes"
DEADLETTER = "shadow.deadletter"
DEFINITIONS = "shadow.definitions"


@dataclass(frozen=True)
class TopicSpec:
    """A topic as shadowflow needs it."""

    name: str
    doc: str
    retention_ms: int
    cleanup_policy: str = "delete"
    copartitioned: bool = False
    """Keyed by workflow id with the shared partition count, so one worker owns a workflow."""
    partitions: int | None = None
    """A fixed partition count; ``None`` means ``SHADOWFLOW_PARTITIONS``."""

    def config(self) -> dict[str, str]:
        """Topic configuration for the admin client."""
        config = {"cleanup.policy": self.cleanup_policy}
        if self.cleanup_policy == "delete":
            config["retention.ms"] = str(self.retention_ms)
        return config


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(HISTORY, "Workflow history events (HistoryEvent, HistoryEnvelope).",
              7 * DAY_MS, copartitioned=True),
    TopicSpec(TELEMETRY, "Resource samples per action (TelemetryBatch, TelemetryEnvelope).",
              3 * DAY_MS, copartitioned=True),
    TopicSpec(STATE, "The primary's state-vector snapshots (StateSnapshot).",
              7 * DAY_MS, copartitioned=True),
    TopicSpec(RESERVATIONS, "Reservation commands to resource managers (ReservationCommand).",
              7 * DAY_MS),
    TopicSpec(ANOMALIES, "Anomalies and alerts (Anomaly).", 30 * DAY_MS),
    TopicSpec(MIRROR, "Mirror snapshots and deltas, latest per key.", 0, cleanup_policy="compact"),
    TopicSpec(SHADOWS, "Shadow workflows' state (ShadowRecord), latest per run.", 0,
              cleanup_policy="compact"),
    TopicSpec(OUTCOMES, "What the shadows learned (ActionOutcome), every worker follows all of "
              "it; keyed by the fact's identity.", 0, cleanup_policy="compact"),
    TopicSpec(DEADLETTER, "Messages that could not be processed (DeadLetter).", 30 * DAY_MS),
    TopicSpec(DEFINITIONS, "Workflow definitions registered through the API (JSON), latest "
              "per workflow type; every worker reads all of it.", 0, cleanup_policy="compact",
              partitions=1),
)


class TopologyError(RuntimeError):
    """The broker's topics do not match what shadowflow declares, or it could not be asked."""


def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS,
                  timeout: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Safe to call from many processes at once. Raises ``TopologyError`` when an existing
    co-partitioned topic has another partition count than ``settings.partitions``: joining
    such topics by workflow id would silently send one workflow to two workers.
    """
    admin = AdminClient(settings.kafka_config)
    existing = _partition_counts(admin, timeout)
    wanted = [
        NewTopic(s.name, s.partitions or settings.partitions, settings.replication_factor,
                 config=s.config())
        for s in specs if s.name not in existing
    ]
    created: list[str] = []
    if wanted:
        for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
            try:
                future.result(timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopologyError(f"could not create topic {name}: {exc}") from exc
        existing = _partition_counts(admin, timeout)
    mismatched = {s.name: existing.get(s.name) for s in specs
                  if s.copartitioned and existing.get(s.name) != settings.partitions}
    if mismatched:
        raise TopologyError(
            f"co-partitioned topics must have {settings.partitions} partitions "
            f"(SHADOWFLOW_PARTITIONS), found {mismatched}")
    if created:
        log.info("created topics %s", ", ".join(created))
    return created


def _partition_counts(admin: AdminClient, timeout: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopologyError(f"broker did not answer within {timeout:.0f}s: {exc}") from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items()}
