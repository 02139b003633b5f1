"""What the local broker (Tansu) itself adds to a round trip, so that latency benchmarks through a
worker are read against it: a message produced (one per record batch, ``linger.ms`` 1, at a fixed
rate) and consumed back from the end of the topic by a plain confluent-kafka consumer.

1. The consumer's fetch wait: a broker that answers a fetch as soon as records arrive makes the
   wait irrelevant under load; one that holds every fetch for its whole wait adds it to every
   message (``SHADOWFLOW_CONSUMER_FETCH_WAIT_MS`` sets the worker's).
2. The record batches a partition holds: the same topic measured over consecutive spans of
   ``SECONDS`` at ``RATE`` one-message batches per second, then on a topic first given as many
   messages in large batches (as many bytes held, far fewer batches).

    .venv/bin/python bench/bench_broker.py [RATE] [SECONDS] [SPANS]
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench._common import bench_stack, percentiles
from topology.settings import Settings


def round_trips(settings: Settings, topic: str, rate: float, seconds: float,
                fetch_wait_ms: int) -> list[float]:
    """Milliseconds from each message produced to it being consumed back."""
    seen: dict[bytes, float] = {}
    stop = threading.Event()
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": "bench-broker",
                         "enable.auto.commit": False, "fetch.wait.max.ms": fetch_wait_ms})
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(settings.partitions)])

    def follow() -> None:
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                seen.setdefault(message.value(), time.time())

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(3)  # assigned and at the end
    producer = Producer({"bootstrap.servers": settings.broker, "linger.ms": 1})
    sent: dict[bytes, float] = {}
    started, n = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        pause = started + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        value = f"{topic}/{fetch_wait_ms}/{time.time_ns()}/{n}".encode()
        sent[value] = time.time()
        producer.produce(topic, value, str(n % 37).encode())
        producer.poll(0)
        n += 1
    producer.flush(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(seen.keys() & sent.keys()) < len(sent):
        time.sleep(0.1)
    stop.set()
    thread.join()
    consumer.close()
    return [(seen[v] - sent[v]) * 1000 for v in sent if v in seen]


def fill(settings: Settings, topic: str, messages: int) -> None:
    """``messages`` small messages in large record batches (``linger.ms`` 50)."""
    producer = Producer({"bootstrap.servers": settings.broker, "linger.ms": 50})
    for n in range(messages):
        producer.produce(topic, b"x" * 100, str(n % 37).encode())
        if n % 1000 == 0:
            producer.poll(0)
    producer.flush(60)


def main() -> None:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 1000.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    spans = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    print(f"broker round trips at {rate:.0f} messages/s, one message per record batch")
    with bench_stack() as settings:
        names = ["wait-10", "wait-100", "batches", "filled"]
        admin = AdminClient({"bootstrap.servers": settings.broker})
        for future in admin.create_topics(
                [NewTopic(n, settings.partitions, 1) for n in names]).values():
            future.result(30)
        for wait in (10, 100):
            print(f"  fetch wait {wait:3d} ms, fresh topic          "
                  f"{percentiles(round_trips(settings, f'wait-{wait}', rate, seconds, wait))}")
        for span in range(spans):
            held = int(span * rate * seconds)
            print(f"  fetch wait  10 ms, after {held:7,d} batches "
                  f"{percentiles(round_trips(settings, 'batches', rate, seconds, 10))}")
        held = int(spans * rate * seconds)
        fill(settings, "filled", held)
        print(f"  fetch wait  10 ms, after {held:,d} messages in large batches "
              f"{percentiles(round_trips(settings, 'filled', rate, seconds, 10))}")


if __name__ == "__main__":
    main()
