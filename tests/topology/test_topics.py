"""Topics are created once, with their partitions and cleanup policy, against the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from topology.settings import Settings
from topology.topics import MIRROR, TOPICS, TopicSpec, TopologyError, ensure_topics


def test_topics_are_created_idempotently_with_their_config(settings: Settings) -> None:
    ensure_topics(settings)
    assert ensure_topics(settings) == []
    admin = AdminClient({"bootstrap.servers": settings.broker})
    metadata = admin.list_topics(timeout=10)
    for spec in TOPICS:
        expected = spec.partitions or settings.partitions
        assert len(metadata.topics[spec.name].partitions) == expected, spec.name
    described = admin.describe_configs([ConfigResource("topic", MIRROR)])
    config = next(iter(described.values())).result()
    assert config["cleanup.policy"].value == "compact"


def test_copartitioned_topic_with_other_partition_count_is_refused(settings: Settings) -> None:
    odd = TopicSpec("wf.test-odd", "a co-partitioned topic created with 1 partition",
                    60_000, copartitioned=True)
    ensure_topics(settings.with_overrides(partitions=1), (odd,))
    with pytest.raises(TopologyError, match="must have 4 partitions"):
        ensure_topics(settings, (odd,))
