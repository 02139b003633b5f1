"""Forecasting: leave-one-family-out on the shared traces (run orders name and random), and the
cost of predict + update.

Cost reference, measured in the same run: the simplest learning baseline (max seen so far) doing
the same predict + update calls on the same tasks.
    .venv/bin/python bench/bench_forecast.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.forecasting.evaluation import sizing_context
from streams.forecasting.forecaster import Forecaster
from streams.forecasting.selection import leave_one_family_out
from streams.forecasting.sizing import MaxSeen
from streams.traces.formats import load_trace
from streams.traces.schedule import schedule
from topology.evaluate import lofo_table, trace_files

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"


def cost_per_action(traces, method_factory) -> float:
    """Microseconds per action for forecast (memory and CPU) + observe (both)."""
    tasks = []
    for index, trace in enumerate(traces):
        for slot in schedule(trace):
            t = slot.task
            tasks.append((sizing_context(trace, slot, f"{trace.name}#{index}", slot.start_s),
                          float(t.memory_bytes or 0), float(t.cpu_cores or 0), t.runtime_s))
    best = float("inf")
    for _ in range(3):
        method = method_factory()
        started = time.perf_counter()
        for context, memory, cpu, runtime in tasks:
            m = method.allocate(context, "memory")
            c = method.allocate(context, "cpu")
            method.observe(context, "memory", memory, m, runtime)
            method.observe(context, "cpu", cpu, c, runtime)
        best = min(best, time.perf_counter() - started)
    return best / len(tasks) * 1e6


def main() -> None:
    traces = [load_trace(p) for p in trace_files([str(TRACES)])]
    for order in ("name", "random"):
        print(lofo_table(leave_one_family_out(traces, order)), end="\n\n")
    ours = cost_per_action(traces, Forecaster)
    reference = cost_per_action(traces, MaxSeen)
    print(f"predict + update, memory and CPU, per action: shadowflow {ours:.1f} µs, "
          f"max seen (ref) {reference:.1f} µs")


if __name__ == "__main__":
    main()
