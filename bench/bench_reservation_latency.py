"""Reservation latency: from an action's ``ACTION_SCHEDULED`` on ``wf.history`` to its command
on ``shadow.reservations``, at a fixed offered load (default 1,000 events/s, one event per
message), through a running worker; against the broker's own round trip (a message produced and
consumed back by the same clients, no worker) measured in the same run.

Run: ``.venv/bin/python bench/bench_reservation_latency.py [EVENTS_PER_SECOND] [SECONDS]``.
Prints p50/p99 in milliseconds, with the default batch linger (0.05 s: a batch closes that long
after its first message once nothing more is queued) and with the linger as long as the window
(0.5 s: every batch waits the whole window, as Faust's own ``noack_take`` makes it).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka.admin import AdminClient, NewTopic

from bench._common import bench_stack, command_key, follow_keys, percentiles, warm_publisher
from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent
from topology import topics
from topology.settings import Settings
from topology.worker import prepare
from topology.worker_process import WorkerProcess

LOGS = Path(tempfile.mkdtemp(prefix="shadowflow-bench-logs-"))
PROBE_TOPIC = "bench.probe"


def _stream(workflows: int, events: int) -> list[HistoryEvent]:
    """``events`` history events of ``workflows`` runs, interleaved: each run starts, then its
    actions are scheduled, started and completed (with the usage they measured)."""
    runs: list[list[HistoryEvent]] = []
    per_run = events // workflows + 3
    for w in range(workflows):
        wf = f"lat-{w:04d}"
        run = [HistoryEvent(wf, "run", "latency", 1, EventKind.WORKFLOW_STARTED, 0)]
        for kind_index in range(per_run):
            kind = (EventKind.ACTION_SCHEDULED, EventKind.ACTION_STARTED,
                    EventKind.ACTION_COMPLETED)[kind_index % 3]
            run.append(HistoryEvent(
                wf, "run", "latency", len(run) + 1, kind, 0,
                action_id=f"a{kind_index // 3:05d}", action_type="step",
                attributes={"usage.memory_bytes": 1e8}
                if kind is EventKind.ACTION_COMPLETED else {}))
        runs.append(run)
    return [run[i] for i in range(per_run + 1) for run in runs][:events]


def _measure(settings: Settings, rate: float, seconds: float, topic: str,
             key_of: Callable[[bytes], bytes | None],
             send: Callable[[int], list[Any]]) -> list[float]:
    """Offer ``rate`` events/s for ``seconds``; latency in ms of every keyed send seen back."""
    seen: dict[bytes, float] = {}
    sent: dict[bytes, float] = {}
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=follow_keys,
                              args=(settings, topic, seen, stop, ready, key_of))
    thread.start()
    ready.wait(10)
    time.sleep(2)  # let the assignment settle before measuring
    publisher = warm_publisher(settings)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        due = started + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        for (message_key, probe), value_topic, value in send(n):
            if probe is not None:
                sent[probe] = time.time()
            publisher.send(value_topic, message_key, value)
        n += 1
    publisher.flush()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(seen.keys() & sent.keys()) < len(sent):
        time.sleep(0.2)
    stop.set()
    thread.join()
    return [(seen[k] - sent[k]) * 1000 for k in sent if k in seen]


def _through_worker(settings: Settings, rate: float, seconds: float,
                    linger: float) -> list[float]:
    codec = default_codec()
    worker = WorkerProcess(settings.with_overrides(
        app_id="bench-latency", consumer_batch_linger_seconds=linger, pool_memory_gib=1e6,
        pool_cpu_cores=1e6), LOGS / f"latency-{linger}.log").start(120)
    stream = _stream(20, int(rate * seconds) + 100)

    def history(n: int) -> list[Any]:
        event = stream[n % len(stream)]
        key = (f"{event.workflow_id}/{event.action_id}".encode()
               if event.kind is EventKind.ACTION_SCHEDULED else None)
        return [((event.workflow_id, key), topics.HISTORY,
                 codec.encode("HistoryEvent", event.to_avro()))]

    try:
        return _measure(settings, rate, seconds, topics.RESERVATIONS, command_key, history)
    finally:
        worker.stop()


def main() -> None:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 1000.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    print(f"reservation latency at {rate:.0f} events/s offered (one event per message), "
          f"{seconds:.0f} s each")
    with bench_stack() as settings:  # each measurement on a stack of its own, from empty
        prepare(settings)
        admin = AdminClient({"bootstrap.servers": settings.broker})
        for future in admin.create_topics([NewTopic(PROBE_TOPIC, settings.partitions, 1)]).values():
            future.result(30)

        def probe(n: int) -> list:
            return [(("probe", str(n).encode()), PROBE_TOPIC, str(n).encode())]

        broker = _measure(settings, rate, seconds, PROBE_TOPIC, lambda v: v, probe)
        print(f"  broker round trip (reference)      {percentiles(broker)}")
    default = Settings()
    for linger in (default.consumer_batch_linger_seconds, default.consumer_batch_seconds):
        with bench_stack() as settings:
            prepare(settings)
            latencies = _through_worker(settings, rate, seconds, linger)
        print(f"  shadowflow, batch linger {linger:4.2f} s   {percentiles(latencies)}")
    print(f"worker logs: {LOGS}")


if __name__ == "__main__":
    main()
