"""Memory per active workflow: N runs of the shared traces, each fed the first half of its
history (actions in flight, nothing finished) through the worker's pure state as the agents
drive it (a mirror with a record after each batch of 50 events, a shadow with its forecasts and
reservations), measured with tracemalloc against the same state empty; the events decoded from
Avro envelopes inside the measurement, as the worker does. Reports bytes per
workflow (the forecaster's learning, shared by all and bounded, included).
    .venv/bin/python bench/bench_memory.py [N]
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.codec import default_codec
from schemas.records import HistoryEvent, history_events
from streams.forecasting.forecaster import Forecaster
from streams.mirror.changelog import next_records
from streams.mirror.registry import Mirrors
from streams.shadow.pool import ReservationPool
from streams.shadow.workflows import ShadowWorkflows
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "wfinstances"
FILES = sorted(TRACES.glob("*/*/*.json"))


def _halves(count: int) -> list[list[HistoryEvent]]:
    traces = [load_wfformat(p) for p in FILES]
    histories = [history_from_trace(traces[n % len(traces)], f"wf-{n}", f"r-{n}", 0)
                 for n in range(count)]
    return [history[:len(history) // 2] for history in histories]


def _envelopes(histories: list[list[HistoryEvent]]) -> list[list[bytes]]:
    codec = default_codec()
    return [[codec.encode("HistoryEnvelope", {
        "workflow_id": history[0].workflow_id,
        "events": [e.to_avro() for e in history[start:start + 50]]})
             for start in range(0, len(history), 50)] for history in histories]


def measure(histories: list[list[HistoryEvent]]) -> tuple[int, int, int]:
    """Bytes held by mirrors and shadows of ``histories``, their events, and the bytes of the
    mirrors' state vectors alone (their variables' dicts and names). The events are decoded
    from Avro envelopes of 50 inside the measurement, as the worker does: what the mirrors
    keep of them (their promotion tails) is counted, the rest is freed."""
    codec = default_codec()
    envelopes = _envelopes(histories)
    mirrors = Mirrors()
    shadows = ShadowWorkflows(Forecaster(), ReservationPool({"memory_bytes": 1e18}, 3_600_000))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for messages in envelopes:
        for message in messages:
            batch = history_events(codec.decode(message))
            for event in batch:
                mirrors.offer(event, 0, 0)
                shadows.on_event(event, 0)
            next_records(mirrors.runs[(batch[0].workflow_id, batch[0].run_id)])
            del batch
        shadows.take_changes()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    vectors = sum(sys.getsizeof(m.variables) + sum(map(sys.getsizeof, m.variables))
                  for m in mirrors.runs.values())
    return used, sum(len(h) for h in histories), vectors


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    histories = _halves(count)
    used, events, vectors = measure(histories)
    print(f"{count} active workflows of {len(FILES)} shared traces, first half of each history "
          f"({events} events, {events / count:.0f} per workflow)")
    print(f"  mirrors + shadows: {used / 1e6:.1f} MB, {used / count / 1e3:.1f} kB per workflow, "
          f"{used / events:.0f} B per event applied")
    print(f"  of which the mirrors' state vectors (the contract: a variable per action and "
          f"result, and the run's own): {vectors / count / 1e3:.1f} kB per workflow")


if __name__ == "__main__":
    main()
