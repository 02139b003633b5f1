"""First-path throughput: wf.history -> decode -> ClickHouse, against a do-nothing Faust agent.

Both consume the same pre-produced topic in the same run, with the same Faust settings and
batching (``take_batches``); the reference only acks. Timed from Faust's "Worker ready" log line
(partitions assigned) to the last message seen (reference), and for the pipeline to two ends:
the last ``workflow_events`` row stored (the first path alone), and every message processed (its
offset committed, which happens only once the mirrors' and shadows' effects of its events are
stored too: what a worker sustains). Two shapes of the same events: one event per message, and
envelopes of 50. Last, the ceiling: the same messages decoded and applied to fresh mirrors and
shadows in this process, with no broker, no ClickHouse and no publishing at all; and the bound
it sets: a worker that consumes like the reference and then does this work (one core, the GIL)
takes at least the sum of the two times, so its ratio to the reference is at most
``reference / (reference + ceiling)`` however cheap its I/O is made.
    .venv/bin/python bench/bench_first_path.py [BATCH_SECONDS]
(``BATCH_SECONDS``: the batch window of both consumers; default the setting's default).
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    bench_stack,
    best_time,
    processed_at,
    ready_at,
    reference_seconds,
    sample_events,
)
from schemas.codec import default_codec
from sinks.clickhouse import connect
from streams.forecasting.forecaster import Forecaster
from streams.mirror.registry import Mirrors
from streams.runtime.history import decode_history
from streams.runtime.kafka import Publisher
from streams.runtime.messages import RawMessage
from streams.shadow.pool import ReservationPool
from streams.shadow.workflows import ShadowWorkflows
from topology import topics
from topology.settings import Settings
from topology.worker import prepare
from topology.worker_process import WorkerProcess

EVENTS = 100_000
WORKFLOWS = 100
LOGS = Path(tempfile.mkdtemp(prefix="shadowflow-bench-logs-"))


def _produce(settings: Settings, per_message: int) -> int:
    publisher = Publisher(settings)
    per_workflow = EVENTS // WORKFLOWS
    for w in range(WORKFLOWS):
        publisher.send_history(sample_events(f"wf-{w:04d}", per_workflow), per_message)
    publisher.flush(120)
    return publisher.sent_to[topics.HISTORY]


def _pipeline(settings: Settings, messages: int) -> tuple[float, float, float]:
    """Seconds from ready to the last row stored, and to every message processed; and the
    longest the worker went without committing anything new (a stall shows here)."""
    group = "bench-real"
    worker = WorkerProcess(settings.with_overrides(app_id=group),
                           LOGS / f"real-{time.monotonic_ns()}.log")
    client = connect(settings)
    worker.start(120)
    # Commits are followed from the start, in a thread of their own: a pause before the rows
    # are all stored counts too.
    with ThreadPoolExecutor(1) as pool:
        following = pool.submit(processed_at, settings, group, {topics.HISTORY: messages})
        try:
            while client.execute("SELECT count() FROM workflow_events FINAL")[0][0] < EVENTS:
                time.sleep(0.05)
            stored = time.time() - ready_at(worker)
            processed = following.result()
            return stored, processed.at - ready_at(worker), processed.longest_pause
        finally:
            worker.stop()


def _logic_seconds(per_message: int) -> float:
    """Seconds to decode the same messages and apply their events to fresh mirrors and shadows
    in this process (best of three): the work per event with no I/O."""
    codec = default_codec()
    messages = []
    for w in range(WORKFLOWS):
        events = sample_events(f"wf-{w:04d}", EVENTS // WORKFLOWS)
        for start in range(0, len(events), per_message):
            chunk = events[start:start + per_message]
            value = codec.encode("HistoryEnvelope", {"workflow_id": chunk[0].workflow_id,
                                                     "events": [e.to_avro() for e in chunk]})
            messages.append(RawMessage(topics.HISTORY, w % 4, len(messages),
                                       chunk[0].workflow_id.encode(), value))

    def apply() -> None:
        mirrors = Mirrors()
        shadows = ShadowWorkflows(Forecaster(), ReservationPool({"memory_bytes": 1e18}))
        for start in range(0, len(messages), 1000):
            batch = decode_history(messages[start:start + 1000], codec, 0)
            assert not batch.rejects, batch.rejects[0].reason
            for item in batch.events:
                mirrors.offer(item.event, item.partition, 0)
                shadows.on_event(item.event, 0, item.partition, item.offset)
            shadows.take_changes()

    return best_time(apply)


def main() -> None:
    window = {"consumer_batch_seconds": float(sys.argv[1])} if len(sys.argv) > 1 else {}
    print(f"first path, {EVENTS} history events of {WORKFLOWS} workflows, 4 partitions")
    print(f"{'events/message':>14} {'consumer':<36} {'messages/s':>11} {'events/s':>10} "
          f"{'ratio':>6}")
    for per_message in (1, 50):
        with bench_stack(**window) as settings:
            prepare(settings)
            messages = _produce(settings, per_message)
            reference = reference_seconds(settings, messages,
                                          LOGS / f"noop-{per_message}.log")
            stored, processed, pause = _pipeline(settings, messages)
            for name, seconds in (("do-nothing agent (ref)", reference),
                                  ("shadowflow: events stored", stored),
                                  ("shadowflow: all processed, committed", processed)):
                print(f"{per_message:>14} {name:<36} {messages / seconds:>11,.0f} "
                      f"{EVENTS / seconds:>10,.0f} {reference / seconds:>6.3f}")
            print(f"{'':>14} longest without a new commit: {pause:.1f} s")
            ceiling = _logic_seconds(per_message)
            bound = reference + ceiling
            for name, seconds in (("decode + mirror + shadow, no I/O", ceiling),
                                  ("bound: reference + that work", bound)):
                print(f"{per_message:>14} {name:<36} {messages / seconds:>11,.0f} "
                      f"{EVENTS / seconds:>10,.0f} {reference / seconds:>6.3f}")
    print(f"worker logs: {LOGS}")


if __name__ == "__main__":
    main()
