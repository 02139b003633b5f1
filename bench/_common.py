"""Shared by the benchmarks: a stack of their own, timing, and sample history events."""

from __future__ import annotations

import contextlib
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.stack import temporary_stack
from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent, Resources
from streams.runtime.kafka import Publisher
from topology import topics
from topology.settings import Settings
from topology.worker_process import WorkerProcess

READY = re.compile(
    r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[INFO\] \[\^\w*Worker\]: Ready")


@contextlib.contextmanager
def bench_stack(**overrides: object) -> Iterator[Settings]:
    """A broker and ClickHouse on the benchmarks' own ports, stopped and deleted afterwards."""
    with temporary_stack(Settings(), "bench", broker_port=39092, clickhouse_port=39000,
                         http_port=38123,
                         clickhouse_database="shadowflow_bench", log_level="warning",
                         **overrides) as stack:
        yield stack.settings


def best_time(action: Callable[[], object], repeats: int = 3) -> float:
    """Seconds ``action`` took, best of ``repeats``: the run least disturbed by the shared
    machine."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def sample_events(workflow_id: str, count: int) -> list[HistoryEvent]:
    """A run's worth of realistic action events: scheduled/started/completed with attributes."""
    kinds = (EventKind.ACTION_SCHEDULED, EventKind.ACTION_STARTED, EventKind.ACTION_COMPLETED)
    return [HistoryEvent(workflow_id, "run-1", "blast", seq, kinds[seq % 3],
                         1_700_000_000_000 + seq * 10, action_id=f"blastall_ID{seq // 3:06d}",
                         action_type="blastall", attributes={"input_bytes": 1.0e6 + seq},
                         declared=Resources(cpu_cores=1.0, memory_bytes=2**30)
                         if seq % 3 == 0 else None)
            for seq in range(1, count + 1)]


def ready_at(worker: WorkerProcess) -> float:
    """Epoch seconds of the worker's last "Ready" log line (partitions assigned)."""
    stamp = READY.findall(worker.log())[-1]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def reference_seconds(settings: Settings, messages: int, log: Path,
                      sources: Sequence[str] = (topics.HISTORY,)) -> float:
    """Seconds the do-nothing Faust agents (``bench/noop_worker.py``, one per topic of
    ``sources``, same settings and batching as the worker) take from ready to ``messages``
    messages seen."""
    worker = WorkerProcess(settings.with_overrides(app_id=f"bench-noop-{time.monotonic_ns()}"),
                           log, [sys.executable, "bench/noop_worker.py"],
                           {"BENCH_TARGET": str(messages), "BENCH_TOPICS": ",".join(sources)})
    worker.start(120)
    try:
        while "DONE" not in worker.log():
            time.sleep(0.05)
        done = float(re.findall(r"DONE \d+ ([\d.]+)", worker.log())[-1])
        return done - ready_at(worker)
    finally:
        worker.kill()


@dataclass(frozen=True)
class Processed:
    """When a consumer group had committed everything, and the longest it went without
    committing anything new on the way (a stall shows here)."""

    at: float
    """Epoch seconds."""
    longest_pause: float
    """Seconds."""
    timeline: tuple[tuple[float, int], ...] = ()
    """(epoch seconds, messages committed) at each change seen."""

    def committed_by(self, when: float) -> int:
        """Messages committed as last seen at or before ``when`` (epoch seconds)."""
        return max((total for at, total in self.timeline if at <= when), default=0)


def processed_at(settings: Settings, group: str, produced: Mapping[str, int],
                 poll_seconds: float = 0.1) -> Processed:
    """Wait until consumer group ``group`` has committed every message of ``produced``
    (messages per topic, on topics that were empty before). Counted from the committed offsets
    alone: Tansu's answer to a watermark request is not the partition's end offset. One client
    asks all along: a new one per look would add a connection and a coordinator lookup to the
    broker the worker is being timed on."""
    partitions = [TopicPartition(topic, p) for topic in produced
                  for p in range(settings.partitions)]
    offsets = Consumer({**settings.kafka_config, "group.id": group})
    last_total, last_change, longest = -1, time.time(), 0.0
    timeline: list[tuple[float, int]] = []
    try:
        while True:
            committed = offsets.committed(partitions, timeout=10)
            total, now = sum(max(tp.offset, 0) for tp in committed), time.time()
            if total != last_total:
                longest = max(longest, now - last_change)
                last_total, last_change = total, now
                timeline.append((now, total))
            if total >= sum(produced.values()):
                return Processed(now, longest, tuple(timeline))
            time.sleep(poll_seconds)
    finally:
        offsets.close()


def follow_keys(settings: Settings, topic: str, seen: dict[bytes, float],
                stop: threading.Event, ready: threading.Event,
                key_of: Callable[[bytes], bytes | None]) -> None:
    """Until ``stop``, read ``topic`` from its end and note in ``seen`` when each key (as
    ``key_of`` a message's value gives it, ``None`` to skip) was first seen, in epoch seconds.
    Sets ``ready`` once assigned. Run it in a thread."""
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": "bench-latency",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(settings.partitions)])
    ready.set()
    try:
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is None or message.error() is not None:
                continue
            key = key_of(message.value())
            if key is not None:
                seen.setdefault(key, time.time())
    finally:
        consumer.close()


WARM_UP_TOPIC = "bench.warmup"


def warm_publisher(settings: Settings) -> Publisher:
    """A publisher for timed sends (``linger.ms`` 1) that has already delivered one message (to
    ``WARM_UP_TOPIC``): an idempotent producer holds its first messages until the broker has
    given it a producer id, about a second on Tansu, and timed, that start-up alone made a p99."""
    admin = AdminClient({"bootstrap.servers": settings.broker})
    for future in admin.create_topics([NewTopic(WARM_UP_TOPIC, 1, 1)]).values():
        with contextlib.suppress(KafkaException):  # already there
            future.result(30)
    publisher = Publisher(settings, **{"linger.ms": 1})
    publisher.send(WARM_UP_TOPIC, b"warm-up", b"warm-up")
    publisher.flush()
    return publisher


def percentiles(values: list[float]) -> str:
    """p50 and p99 of latencies in milliseconds, and how many there were."""
    if not values:
        return "nothing came back"
    cut = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values):7.1f} ms   p99 {cut[98]:7.1f} ms   ({len(values)})"


def command_key(value: bytes) -> bytes | None:
    """``workflow/action`` of a ``shadow.reservations`` command sizing an action (RESERVE or
    ADJUST, not a ``next:`` placeholder); ``None`` for any other command."""
    record = default_codec().decode(value).record
    if record["op"] not in ("RESERVE", "ADJUST") or record["action_id"].startswith("next:"):
        return None
    return f"{record['workflow_id']}/{record['action_id']}".encode()
