"""The reference consumer of bench_first_path: a Faust agent that takes wf.history batches
exactly as the real one does (same app settings, ``noack_take``, acks) but does nothing else.
Prints ``DONE <messages> <epoch seconds>`` once it has seen ``BENCH_TARGET`` messages."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust

from topology import topics
from topology.app import faust_app, raw_topic
from topology.settings import Settings

settings = Settings.from_env()
target = int(os.environ["BENCH_TARGET"])
app = faust_app(settings)


@app.agent(raw_topic(app, topics.HISTORY, settings), name="noop")
async def noop(stream: faust.StreamT) -> None:
    seen = 0
    async for events in stream.noack_take(settings.consumer_batch,
                                          within=settings.consumer_batch_seconds):
        seen += len(events)
        for event in events:
            await stream.ack(event)
        if seen >= target:
            print(f"DONE {seen} {time.time()}", flush=True)


if __name__ == "__main__":
    faust.Worker(app, loglevel="info").execute_from_commandline()
