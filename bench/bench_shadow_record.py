"""What a long run's shadow record costs: one run of N actions (10 in flight at a time, each
scheduled, started and completed with its usage reported), its record written after every batch
of 50 events as the shadow service does, with finished actions sealed in chunks
(``SHADOWFLOW_SHADOW_SEAL_EVERY``, 50) and, as the reference in the same run, never sealed.
Reports the last record's size and the time spent making records per 1,000 events. Then the
same with completions that report no usage: their feedback waits for telemetry (up to
``SHADOWFLOW_FEEDBACK_MAX_WAIT_SECONDS``, 600 s) and none comes, so every completed action
awaits its feedback to the end; they are sealed in full once completed, and records name them
no more.
    .venv/bin/python bench/bench_shadow_record.py [N ...]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.records import EventKind, HistoryEvent
from streams.forecasting.forecaster import Forecaster
from streams.shadow.changelog import SEAL_EVERY, seal_finished, shadow_record
from streams.shadow.pool import ReservationPool
from streams.shadow.workflows import ShadowWorkflows

SIZES = (1_000, 5_000, 20_000)
IN_FLIGHT = 10
UNREPORTED_MAX = 5_000


def history(actions: int, reported: bool = True) -> list[HistoryEvent]:
    """A run of ``actions`` actions, ``IN_FLIGHT`` at a time, completions reporting usage (or,
    not ``reported``, none)."""
    events: list[HistoryEvent] = []

    def add(kind: EventKind, action: int, **attributes: float) -> None:
        sequence = len(events) + 1
        events.append(HistoryEvent("wf-long", "run-1", "pipeline", sequence, kind,
                                   1_700_000_000_000 + sequence * 10, action_id=f"a{action}",
                                   action_type=f"step{action % 7}", attributes=attributes))

    add(EventKind.WORKFLOW_STARTED, -1)
    for action in range(actions + IN_FLIGHT):
        if action < actions:
            add(EventKind.ACTION_SCHEDULED, action, input_bytes=1e6 + action)
            add(EventKind.ACTION_STARTED, action)
        if action >= IN_FLIGHT:
            done = action - IN_FLIGHT
            add(EventKind.ACTION_COMPLETED, done, **({
                "usage.memory_bytes": 2e8 + 1e5 * (done % 13), "usage.cpu_cores": 0.9,
                "usage.network_bytes": 1e4, "usage.cost": 1e-4} if reported else {}))
    return events


def run(events: list[HistoryEvent], every: float) -> tuple[int, float]:
    """The last record's bytes and the seconds spent sealing and making records."""
    shadows = ShadowWorkflows(Forecaster(), ReservationPool({"memory_bytes": 1e18}, 3_600_000))
    key = ("wf-long", "run-1")
    spent, size = 0.0, 0
    for start in range(0, len(events), 50):
        for event in events[start:start + 50]:
            shadows.on_event(event, 0)
        started = time.perf_counter()
        run_shadow = shadows.runs[key]
        if every != math.inf:
            chunk = seal_finished(run_shadow, int(every))
            if chunk is not None:
                shadows.pool.forget_versions(*key, chunk.reservation_ids)
        record = shadow_record(run_shadow, shadows.pool.reservations_of(*key),
                               shadows.pool.versions_of(*key),
                               shadows.transitions.of_type(run_shadow.workflow_type))
        spent += time.perf_counter() - started
        size = len(record["state"])
    return size, spent


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or list(SIZES)
    for reported in (True, False):
        print("completions " + ("reporting their usage" if reported else
                                "reporting none (feedback awaits telemetry)"))
        print(f"{'actions':>8} {'events':>8} {'record kB sealed':>17} {'never sealed':>13} "
              f"{'ms/1k events sealed':>20} {'never sealed':>13}")
        # Unsealed, a record of awaiting actions grows by about 1 kB per action: past 5,000 the
        # reference alone would take hours.
        for actions in (sizes if reported else [n for n in sizes if n <= UNREPORTED_MAX]):
            events = history(actions, reported)
            sealed = run(events, SEAL_EVERY)
            whole = run(events, math.inf)
            per_k = 1000 / len(events) * 1000
            print(f"{actions:>8} {len(events):>8} {sealed[0] / 1e3:>17.1f} "
                  f"{whole[0] / 1e3:>13.1f} {sealed[1] * per_k:>20.1f} {whole[1] * per_k:>13.1f}")


if __name__ == "__main__":
    main()
