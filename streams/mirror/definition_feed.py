"""Keeping every worker's definition registry in step with ``shadow.definitions``.

A registration through the API is published there (compacted, one partition, JSON values keyed
by workflow type); each worker reads the topic from the start and then follows it on a background
thread, so all workers apply the same definitions and a restarted worker gets them back.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.mirror.definitions import (
    DefinitionError,
    DefinitionRegistry,
    load_definitions,
    parse_definition,
)

log = logging.getLogger(__name__)


def initial_registry(definitions_path: str) -> DefinitionRegistry:
    """The definitions of ``definitions_path`` (a file or a folder of ``*.json``; empty: none)."""
    if not definitions_path:
        return DefinitionRegistry()
    path = Path(definitions_path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    definitions = load_definitions(files)
    log.info("loaded %d workflow definitions from %s", len(definitions), path)
    return DefinitionRegistry(definitions)


class DefinitionFeed:
    """Follows the definitions topic (``shadow.definitions``, one partition) on a daemon thread,
    registering what it reads."""

    def __init__(self, kafka_config: Mapping[str, str], topic: str,
                 registry: DefinitionRegistry) -> None:
        self._kafka_config = dict(kafka_config)
        self._topic = topic
        self._registry = registry
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="definition-feed", daemon=True)

    def start(self) -> None:
        """Start following the topic."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following (returns at once; the thread ends within a second)."""
        self._stop.set()

    def _run(self) -> None:
        consumer = Consumer({**self._kafka_config,
                             "group.id": "shadowflow-definitions",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(self._topic, 0, OFFSET_BEGINNING)])
        try:
            while not self._stop.is_set():
                message = consumer.poll(1.0)
                if message is None or message.error() is not None or message.value() is None:
                    continue
                try:
                    definition = parse_definition(json.loads(message.value()))
                except (ValueError, DefinitionError) as exc:
                    log.warning("skipping a bad definition at %s@%d: %s", self._topic,
                                message.offset(), exc)
                    continue
                self._registry.register(definition)
                log.info("definition of %s registered", definition.workflow_type)
        finally:
            consumer.close()
