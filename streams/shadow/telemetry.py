"""Telemetry folded into tumbling windows per action: the time-series shadow repository's rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from schemas.records import TelemetryBatch


@dataclass(frozen=True, slots=True)
class Window:
    """The samples of one action in one tumbling window, from one telemetry batch."""

    workflow_id: str
    run_id: str
    action_id: str
    action_type: str
    attempt: int
    window_start_ms: int
    batch_first_ms: int
    """First timestamp of the batch the samples came from: with the window start, it tells the
    rows of different batches apart, and makes a re-delivered batch's rows the same rows."""
    samples: int
    cpu_peak: float
    cpu_mean: float
    memory_peak: float
    memory_mean: float
    network_bytes: float
    cost: float


def windows(batch: TelemetryBatch, window_ms: int) -> list[Window]:
    """The batch's samples grouped into tumbling windows of ``window_ms``, in time order."""
    if not batch.timestamps_ms:
        return []
    groups: dict[int, list[int]] = {}
    for i, stamp in enumerate(batch.timestamps_ms):
        groups.setdefault(stamp - stamp % window_ms, []).append(i)
    first = min(batch.timestamps_ms)
    out = []
    for start in sorted(groups):
        index = groups[start]
        cpu = [batch.cpu_cores[i] for i in index]
        memory = [batch.memory_bytes[i] for i in index]
        out.append(Window(
            batch.workflow_id, batch.run_id, batch.action_id, batch.action_type or "",
            batch.attempt, start, first, len(index), max(cpu), sum(cpu) / len(cpu),
            float(max(memory)), sum(memory) / len(memory),
            float(sum(batch.network_bytes[i] for i in index)),
            float(sum(batch.cost[i] for i in index))))
    return out


def window_columns(made: Sequence[Window], names: Sequence[str]) -> list[list[Any]]:
    """Windows as columns: one list per field of ``names`` (the ``action_usage`` table's
    columns, which are a window's fields). Straight from the slots: ``asdict`` deep-copies each
    window and was the dearest step of folding telemetry."""
    if not made:
        return [[] for _ in names]
    return [list(column) for column in zip(*map(attrgetter(*names), made), strict=True)]
