"""The reference consumer of the throughput benchmarks: Faust agents that take batches exactly
as the real ones do (same app settings, ``take_batches``, acks) but do nothing else, one agent per
topic of ``BENCH_TOPICS`` (comma-separated; default ``wf.history``). Prints ``DONE <messages>
<epoch seconds>`` once they have seen ``BENCH_TARGET`` messages together."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust

from streams.runtime.take import take_batches
from topology import topics
from topology.app import faust_app, raw_topic
from topology.settings import Settings

settings = Settings.from_env()
target = int(os.environ["BENCH_TARGET"])
app = faust_app(settings)
seen = 0


def _noop_agent(topic: str) -> None:
    async def noop(stream: faust.StreamT) -> None:
        global seen
        async for events in take_batches(stream, settings.consumer_batch,
                                         settings.consumer_batch_seconds,
                                         settings.consumer_batch_linger_seconds):
            seen += len(events)
            for event in events:
                await stream.ack(event)
            if seen >= target:
                print(f"DONE {seen} {time.time()}", flush=True)

    app.agent(raw_topic(app, topic, settings), name=f"noop-{topic}")(noop)


for name in os.environ.get("BENCH_TOPICS", topics.HISTORY).split(","):
    _noop_agent(name)


if __name__ == "__main__":
    faust.Worker(app, loglevel="info").execute_from_commandline()
