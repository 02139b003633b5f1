"""Sink throughput into ClickHouse: rows/s through the batching sink.

Reference, measured in the same run: one direct columnar insert of the same rows with
clickhouse-driver (the fastest the server takes them). The sink is fed as agents feed it: many
writers of 2,000 rows each, awaiting their rows' storage.
    .venv/bin/python bench/bench_sink.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_stack, best_time, sample_events
from sinks.batcher import BatchingSink
from sinks.clickhouse import ColumnarWriter, connect, wait_until_ready
from sinks.migrations import migrate
from sinks.tables import WORKFLOW_EVENTS, workflow_event_columns
from streams.runtime.messages import Located

ROWS = 200_000
PER_WRITE = 2_000


def main() -> None:
    with bench_stack() as settings:
        wait_until_ready(settings)
        migrate(settings)
        located = [Located(e, 0, i) for i, e in enumerate(sample_events("wf-bench", ROWS))]
        columns = workflow_event_columns(located)
        chunks = [workflow_event_columns(located[i:i + PER_WRITE])
                  for i in range(0, ROWS, PER_WRITE)]
        writer = ColumnarWriter(settings)
        client = connect(settings)

        def direct() -> None:
            client.execute("TRUNCATE TABLE workflow_events")
            writer.insert(WORKFLOW_EVENTS.name, WORKFLOW_EVENTS.columns, columns)

        def through_sink() -> None:
            client.execute("TRUNCATE TABLE workflow_events")

            async def feed() -> None:
                sink = BatchingSink(writer.insert, max_rows=settings.sink_batch_rows,
                                    max_age=settings.sink_flush_seconds)
                await asyncio.gather(*(sink.write(WORKFLOW_EVENTS, c) for c in chunks))
                await sink.close()
            asyncio.run(feed())

        reference = best_time(direct)
        ours = best_time(through_sink)
        (stored,), = client.execute("SELECT count() FROM workflow_events FINAL")
        columnize = best_time(lambda: workflow_event_columns(located), 1)
        assert stored == ROWS, stored
        print(f"sink, {ROWS} workflow_events rows, {PER_WRITE} rows per write, "
              f"sink_batch_rows={settings.sink_batch_rows}")
        print(f"{'path':<36} {'rows/s':>10}")
        print(f"{'direct columnar insert (reference)':<36} {ROWS / reference:>10,.0f}")
        print(f"{'batching sink':<36} {ROWS / ours:>10,.0f}   "
              f"(time ours/ref {ours / reference:.2f})")
        print(f"{'events -> columns (CPU only)':<36} {ROWS / columnize:>10,.0f}")


if __name__ == "__main__":
    main()
