"""Telemetry folded into tumbling windows, and the windows as ``action_usage`` columns."""

from __future__ import annotations

from dataclasses import asdict

from schemas.records import TelemetryBatch
from sinks.tables import ACTION_USAGE, columns_of
from streams.shadow.telemetry import window_columns, windows


def _batch(stamps: list[int]) -> TelemetryBatch:
    n = len(stamps)
    return TelemetryBatch("wf", "run", "a1", "align", 2, stamps, [float(i) for i in range(n)],
                          [100 * (i + 1) for i in range(n)], [10] * n, [0.5] * n)


def test_samples_fall_into_tumbling_windows_in_time_order() -> None:
    made = windows(_batch([25_000, 1_000, 9_999, 10_000, 12_000]), 10_000)
    assert [(w.window_start_ms, w.samples) for w in made] == [(0, 2), (10_000, 2), (20_000, 1)]
    first = made[0]
    assert first.batch_first_ms == 1_000
    assert (first.cpu_peak, first.cpu_mean) == (2.0, 1.5)
    assert (first.memory_peak, first.memory_mean) == (300.0, 250.0)
    assert (first.network_bytes, first.cost) == (20.0, 1.0)
    assert windows(_batch([]), 10_000) == []


def test_window_columns_are_the_action_usage_columns_in_table_order() -> None:
    made = windows(_batch([1_000, 15_000]), 10_000) + windows(_batch([40_000]), 10_000)
    names = ACTION_USAGE.columns
    assert window_columns(made, names) == columns_of(ACTION_USAGE, [asdict(w) for w in made])
    assert window_columns([], names) == [[] for _ in names]
