"""The first path end to end: confluent-kafka producer -> worker process -> ClickHouse.

Real broker, real ClickHouse, real worker processes; a crash is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Producer

from infra.stack import LocalStack
from schemas.codec import default_codec
from schemas.records import DeadLetter, EventKind, HistoryEvent
from sinks.clickhouse import connect
from streams.runtime.kafka import read_topic
from tests.support import WorkerProcess, wait_for
from topology import topics
from topology.settings import Settings

CODEC = default_codec()


def _history(workflow_id: str, count: int) -> list[HistoryEvent]:
    return [HistoryEvent(workflow_id, "run-1", "test", seq, EventKind.STATE_UPDATED,
                         1_700_000_000_000 + seq, values={"step": seq})
            for seq in range(1, count + 1)]


def _envelope(events: list[HistoryEvent]) -> bytes:
    return CODEC.encode("HistoryEnvelope", {"workflow_id": events[0].workflow_id,
                                            "events": [e.to_avro() for e in events]})


class _Producer:
    """confluent-kafka producer that remembers where each message landed."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer({"bootstrap.servers": settings.broker, "linger.ms": 5})
        self.landed: dict[bytes, tuple[int, int]] = {}

    def send(self, key: str, value: bytes) -> None:
        def delivered(error, message) -> None:
            assert error is None, error
            self.landed[message.value()] = (message.partition(), message.offset())
        self._producer.produce(topics.HISTORY, value, key.encode(), on_delivery=delivered)
        self._producer.poll(0)

    def flush(self) -> None:
        assert self._producer.flush(30) == 0


def _stored(settings: Settings, prefix: str) -> list[tuple[str, int]]:
    return connect(settings).execute(
        "SELECT workflow_id, sequence FROM workflow_events FINAL "
        "WHERE startsWith(workflow_id, %(p)s) ORDER BY workflow_id, sequence", {"p": prefix})


def _dead_letters(settings: Settings) -> list[DeadLetter]:
    return [DeadLetter.from_avro(d.record) for d in read_topic(settings, topics.DEADLETTER)]


def test_malformed_messages_go_to_deadletter_and_good_ones_around_them_are_stored(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    prefix = f"dlq-{uuid.uuid4().hex[:8]}-"
    worker = worker_factory().start()
    producer = _Producer(settings)
    garbage = os.urandom(64)
    truncated = _envelope(_history(prefix + "t", 5))[:-4]
    wrong_type = CODEC.encode("StateSnapshot", {"workflow_id": prefix + "s", "run_id": "r",
                                                "sequence": 1, "timestamp_ms": 1,
                                                "variables": {}})
    bad = {garbage: "marker", truncated: "corrupt or truncated",
           wrong_type: "expected HistoryEvent or HistoryEnvelope"}
    good = [_history(f"{prefix}{i}", 20) for i in range(4)]
    for i, events in enumerate(good):
        producer.send(events[0].workflow_id, _envelope(events))
        producer.send(events[0].workflow_id, list(bad)[i % 3] if i < 3 else b"")
    producer.flush()

    expected = sorted((e.workflow_id, e.sequence) for events in good for e in events)
    wait_for(lambda: _stored(settings, prefix) == expected, what="the good events in ClickHouse")
    ours = {*bad, b""}

    def our_letters() -> dict[bytes, DeadLetter] | None:
        found = {d.payload: d for d in _dead_letters(settings)
                 if d.payload in bad or (d.key or b"").startswith(prefix.encode())}
        return found if set(found) == ours else None

    by_payload = wait_for(our_letters, what="the four dead letters")
    for payload, reason in bad.items():
        letter = by_payload[payload]
        assert reason in letter.reason
        assert (letter.topic, letter.partition, letter.offset) == (
            topics.HISTORY, *producer.landed[payload])
    assert by_payload[b""].reason == "empty message value"
    assert worker.process is not None and worker.process.poll() is None, "worker must keep going"


def test_exactly_once_in_clickhouse_across_a_sigkill(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    prefix = f"crash-{uuid.uuid4().hex[:8]}-"
    workflows = [_history(f"{prefix}{i:03d}", 200) for i in range(60)]
    messages = [(events[0].workflow_id, _envelope(events[start:start + 10]))
                for start in range(0, 200, 10) for events in workflows]
    produced = sorted((e.workflow_id, e.sequence) for events in workflows for e in events)
    producer = _Producer(settings)
    done_producing = threading.Event()

    def produce_slowly() -> None:
        # Spread over several seconds so the kill lands mid-stream.
        for i, (key, value) in enumerate(messages):
            producer.send(key, value)
            if i % 40 == 39:
                producer.flush()
                done_producing.wait(0.25)
        producer.flush()

    first = worker_factory().start()
    thread = threading.Thread(target=produce_slowly)
    thread.start()
    stored_at_kill = wait_for(lambda: len(_stored(settings, prefix)) > 1000 and
                              len(_stored(settings, prefix)), what="some rows stored")
    first.kill()
    assert stored_at_kill < len(produced), "the kill must come mid-stream"
    second = worker_factory().start(timeout=90)
    thread.join()
    wait_for(lambda: len(_stored(settings, prefix)) >= len(produced), timeout=120,
             what="all rows after the restart")
    assert _stored(settings, prefix) == produced
    client = connect(settings)
    (count, ids), = client.execute(
        "SELECT count(), uniqExact(row_id) FROM workflow_events FINAL "
        "WHERE startsWith(workflow_id, %(p)s)", {"p": prefix})
    assert count == ids == len(produced)
    assert second.stop() == 0


def test_broker_outage_pauses_the_worker_without_losing_or_doubling_rows(
        stack: LocalStack, settings: Settings,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    # Tansu keeps its data in memory, so the outage is a frozen broker (SIGSTOP), as a network
    # partition looks to its clients, rather than a restart that would empty it.
    prefix = f"outage-{uuid.uuid4().hex[:8]}-"
    before = [_history(f"{prefix}a{i:02d}", 100) for i in range(20)]
    after = [_history(f"{prefix}b{i:02d}", 100) for i in range(20)]
    producer = _Producer(settings)
    worker = worker_factory().start()
    for events in before:
        producer.send(events[0].workflow_id, _envelope(events))
    producer.flush()
    wait_for(lambda: len(_stored(settings, prefix)) == 2000, what="rows before the outage")

    broker_pid = next(s.pid for s in stack.status() if s.name == "broker")
    assert broker_pid is not None
    os.kill(broker_pid, signal.SIGSTOP)
    try:
        time.sleep(settings.session_timeout_seconds + 4)
        assert worker.process is not None and worker.process.poll() is None
    finally:
        os.kill(broker_pid, signal.SIGCONT)

    for events in after:
        producer.send(events[0].workflow_id, _envelope(events))
    producer.flush()
    expected = sorted((e.workflow_id, e.sequence) for events in before + after for e in events)
    wait_for(lambda: _stored(settings, prefix) == expected, timeout=120,
             what="every row after the outage")
    assert worker.process.poll() is None, "the worker must survive the outage"
