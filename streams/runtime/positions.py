"""Where a worker starts reading a partition it was just assigned.

Faust seeks each assigned partition to its committed offset, but aiokafka only seeks when that
offset is above 0: a partition with nothing committed yet (say, while ClickHouse is down and no
batch could be acked) keeps the fetch position of the previous assignment. Messages fetched then
but never processed (Faust drops its buffers at a rebalance) would be skipped for good. Here such
partitions are rewound to their earliest offset, so what was not committed is consumed again.
"""

from __future__ import annotations

import logging

import faust

log = logging.getLogger(__name__)


def register_rewind_uncommitted(app: faust.App) -> None:
    """On every assignment, rewind the partitions that have no committed offset to their
    earliest offset."""

    @app.on_partitions_assigned.connect
    async def rewind(sender: faust.App, assigned: set, **_: object) -> None:
        if not assigned:
            return
        consumer = app.consumer
        committed = await consumer.seek_to_committed()
        uncommitted = [tp for tp in assigned if not committed.get(tp)]
        if not uncommitted:
            return
        earliest = await consumer.earliest_offsets(*uncommitted)
        # seek_wait runs on the consumer's own thread: a plain seek() from this one races the
        # fetcher, which then crashes the worker (KeyError in aiokafka's fetched_records).
        await consumer.seek_wait({tp: earliest.get(tp) or 0 for tp in uncommitted})
        log.info("no committed offset yet for %s: reading them from their earliest offset",
                 ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(uncommitted)))
