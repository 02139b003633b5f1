"""Shared by the benchmarks: a stack of their own, timing, and sample history events."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from infra.stack import temporary_stack
from schemas.records import EventKind, HistoryEvent, Resources
from topology.settings import Settings


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
