"""Latency of GET /shadow/{workflowID}/prediction/{actionID} on a running worker.

Reference, measured in the same run against the same worker: GET of a workflow definition, a
route that only looks up a dictionary, so the difference is the prediction route's own work.
Requests come one at a time from this process over loopback (keep-alive). The run is not sealed
(``shadow_seal_every`` above its action count), so every action's prediction stays served: a
sealed finished action answers 404 and its forecast is in the ``predictions`` table.
    .venv/bin/python bench/bench_prediction_route.py
"""

from __future__ import annotations

import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_stack
from streams.runtime.kafka import Publisher
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace, telemetry_from_trace
from topology.worker import prepare
from topology.worker_process import WorkerProcess

TRACE = (Path(__file__).resolve().parents[2] / "shared" / "traces" / "wfinstances" / "makeflow"
         / "blast" / "blast-chameleon-medium-001.json")
REQUESTS = 2000


def latencies(port: int, paths: list[str]) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for i in range(REQUESTS):
        started = time.perf_counter()
        connection.request("GET", paths[i % len(paths)])
        response = connection.getresponse()
        response.read()
        out.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, (response.status, paths[i % len(paths)])
    connection.close()
    return out


def main() -> None:
    with bench_stack() as settings:
        prepare(settings)
        worker = WorkerProcess(settings.with_overrides(web_port=16099, shadow_seal_every=1_000_000),
                               Path(tempfile.mkdtemp()) / "worker.log")
        worker.start(120)
        try:
            trace = load_wfformat(TRACE)
            events = history_from_trace(trace, "bench-wf", "run-1", 1_700_000_000_000)
            publisher = Publisher(settings)
            publisher.send_history(events)
            publisher.send_telemetry(telemetry_from_trace(trace, events))
            publisher.flush()
            actions = sorted({e.action_id for e in events if e.action_id})
            prediction = [f"/shadow/bench-wf/prediction/{a}" for a in actions]
            deadline = time.monotonic() + 60
            while True:  # until the last action is known to the worker
                try:
                    latencies(16099, prediction[-1:])
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            reference = latencies(16099, ["/shadow/definitions/blast"])
            ours = latencies(16099, prediction)
        finally:
            worker.stop()
    print(f"{REQUESTS} sequential requests over loopback, {len(actions)} distinct actions")
    print(f"{'route':<38} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in (("GET definition (reference)", reference),
                         ("GET prediction", ours)):
        ordered = sorted(values)
        print(f"{name:<38} {statistics.median(ordered):>8.2f} "
              f"{ordered[int(0.99 * len(ordered)) - 1]:>8.2f}")


if __name__ == "__main__":
    main()
