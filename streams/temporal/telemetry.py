"""Resource telemetry of Temporal activities, measured where they run (an SDK interceptor for
Python workers).

While an activity runs, a sampling thread reads the worker process' CPU time and resident memory
every ``interval`` seconds; when it ends, the samples go out as one ``TelemetryBatch`` (per-sample
CPU cores = CPU seconds / wall seconds since the previous sample; memory = resident set size;
network = the JSON size of the activity's arguments and result, on the last sample). These are
the process' figures: with one activity at a time per worker process (``max_concurrent_activities
=1``) they are the activity's own; with several, each activity's samples include the others'.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from schemas.records import TelemetryBatch

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process' resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def cpu_seconds() -> float:
    """CPU seconds this process used (user + system)."""
    times = os.times()
    return times.user + times.system


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON (what the default data converter sends)."""
    try:
        return len(json.dumps(value, default=str).encode())
    except (TypeError, ValueError):
        return 0


class Sampler:
    """Samples CPU time and resident memory on a thread until ``stop``."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []  # (wall, cpu seconds, rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity-sampler", daemon=True)

    def start(self) -> Sampler:
        self._take()
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float, int]]:
        self._stop.set()
        self._thread.join(5)
        self._take()
        return self.samples

    def _take(self) -> None:
        self.samples.append((time.time(), cpu_seconds(), resident_bytes()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()


def telemetry_batch(workflow_id: str, run_id: str, action_id: str, action_type: str,
                    attempt: int, samples: list[tuple[float, float, int]],
                    network_bytes: int, min_interval: float = 0.04) -> TelemetryBatch:
    """The batch of an activity's samples (the first only marks where measuring began). CPU
    time advances in clock ticks, so intervals shorter than ``min_interval`` are joined to the
    next one (a short tail is dropped, an activity shorter than it is one interval), and cores
    never exceed the machine's."""
    limit = float(os.cpu_count() or 1)
    stamps: list[int] = []
    cores: list[float] = []
    memory: list[int] = []
    wall0, cpu0, _ = samples[0]
    peak = 0
    for index, (wall, cpu, rss) in enumerate(samples[1:], start=1):
        peak = max(peak, rss)
        only = index == len(samples) - 1 and not stamps
        if wall - wall0 < min_interval and not only:
            continue
        stamps.append(int(wall * 1000))
        cores.append(min(limit, max(0.0, (cpu - cpu0) / max(wall - wall0, 1e-6))))
        memory.append(peak)
        wall0, cpu0, peak = wall, cpu, 0
    if memory and peak:  # the dropped tail's memory still counts
        memory[-1] = max(memory[-1], peak)
    network = [0] * len(stamps)
    if network:
        network[-1] = network_bytes
    return TelemetryBatch(workflow_id, run_id, action_id, action_type, attempt, stamps, cores,
                          memory, network, [0.0] * len(stamps))


class TelemetryInterceptor(Interceptor):
    """Publishes each activity's ``TelemetryBatch`` through ``publish`` when it ends."""

    def __init__(self, publish: Callable[[TelemetryBatch], None], interval: float = 0.05) -> None:
        self.publish = publish
        self.interval = interval

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Measured(next, self)


class _Measured(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: TelemetryInterceptor) -> None:
        super().__init__(next)
        self.owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        sampler = Sampler(self.owner.interval).start()
        result: Any = None
        try:
            result = await super().execute_activity(input)
            return result
        finally:
            samples = sampler.stop()
            self.owner.publish(telemetry_batch(
                info.workflow_id or "", info.workflow_run_id or "", info.activity_id,
                info.activity_type, info.attempt, samples,
                json_size(list(input.args)) + json_size(result)))
