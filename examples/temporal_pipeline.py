"""An example Temporal workflow that shadowflow shadows: a pipeline of steps whose activities use
real CPU (hashing) and memory (a buffer), keeping its state vector with ``ShadowState``.

    python -m examples.temporal_pipeline worker --task-queue shadowflow-demo

runs a Temporal worker for it (with the telemetry interceptor publishing to the broker of the
``SHADOWFLOW_*`` settings). Started with ``{"steps": n}``, it runs ``crunch`` n times, adds each
result's ``value`` to ``total`` and records ``step`` and ``total``; with ``"continue_every": c``
it continues as new every c steps, carrying its state; with ``"corrupt_at_step": k``
its in-memory ``total`` is off by 1,000 from step k on, as a non-deterministic bug would leave
it (the history, and so the mirror, keep the true total). Promoted (``{"shadowflow_resume":
state}``) it goes on from the step the state says.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from streams.temporal.state import RESUME_KEY as RESUME
    from streams.temporal.state import ShadowState

WORKFLOW_TYPE = "ShadowedPipeline"
CORRUPTION = 1000


@activity.defn(name="crunch")
def crunch(request: dict[str, Any]) -> dict[str, Any]:
    """Hash a buffer of ``megabytes`` ``rounds`` times: real CPU and memory."""
    buffer = bytearray(int(request.get("megabytes", 8)) * 2**20)
    digest = hashlib.sha256()
    for _ in range(int(request.get("rounds", 4))):
        digest.update(buffer)
    step = int(request["step"])
    return {"value": (step * 7) % 101, "digest": digest.hexdigest()[:12], "bytes": len(buffer)}


@workflow.defn(name=WORKFLOW_TYPE)
class ShadowedPipeline:
    """See the module docstring."""

    def __init__(self) -> None:
        self.state = ShadowState()

    @workflow.run
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        self.state = ShadowState.resumed(request)
        if not self.state.resuming:
            self.state.set("steps", int(request["steps"]))
            self.state.set("step", 0)
            self.state.set("total", 0)
        steps, total = int(self.state.get("steps")), int(self.state.get("total"))
        corrupt_at = request.get("corrupt_at_step")
        for step in range(int(self.state.get("step")), steps):
            result = await self.state.run_activity(
                crunch, {"step": step, "megabytes": request.get("megabytes", 8),
                         "rounds": request.get("rounds", 4)},
                activity_id=f"step-{step}", start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=3))
            total += int(result["value"])
            self.state.set("total", total)
            self.state.set("step", step + 1)
            if corrupt_at is not None and step >= int(corrupt_at):
                self.state.corrupt("total", total + CORRUPTION)
            every = int(request.get("continue_every") or 0)
            if every and (step + 1) % every == 0 and step + 1 < steps:
                # A long pipeline goes on in a new run, carrying its state (not its history).
                self.state.continue_as_new({k: v for k, v in request.items() if k != RESUME})
        self.state.finish()
        return {"total": total, "steps": steps}

    @workflow.query
    def shadowflow_state(self) -> dict[str, Any]:
        """The state vector and the history length it reflects."""
        return self.state.snapshot()


def expected_total(steps: int) -> int:
    """The total a run of ``steps`` steps ends with."""
    return sum((step * 7) % 101 for step in range(steps))


async def run_worker(address: str, namespace: str, task_queue: str) -> None:
    """A Temporal worker for the pipeline, publishing its activities' telemetry."""
    from concurrent.futures import ThreadPoolExecutor

    from temporalio.client import Client
    from temporalio.worker import Worker

    from streams.runtime.kafka import Publisher
    from streams.temporal.telemetry import TelemetryInterceptor
    from topology.settings import Settings

    publisher = Publisher(Settings.from_env())

    def publish(batch: Any) -> None:
        publisher.send_telemetry([batch])
        publisher.flush()

    client = await Client.connect(address, namespace=namespace)
    with ThreadPoolExecutor(1) as executor:
        worker = Worker(client, task_queue=task_queue, workflows=[ShadowedPipeline],
                        activities=[crunch], activity_executor=executor,
                        max_concurrent_activities=1,
                        interceptors=[TelemetryInterceptor(publish)])
        await worker.run()


def start_worker_process(settings: Any, log_path: Path) -> subprocess.Popen[bytes]:
    """This module's Temporal worker as a child process, on ``settings``' Temporal address and
    task queue, publishing telemetry to ``settings``' broker."""
    from topology.worker_process import settings_env

    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "examples.temporal_pipeline", "worker", "--address",
             settings.temporal_address, "--namespace", settings.temporal_namespace,
             "--task-queue", settings.temporal_task_queue],
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, **settings_env(settings)}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--address", default="127.0.0.1:7233")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", default="shadowflow-demo")
    args = parser.parse_args()
    asyncio.run(run_worker(args.address, args.namespace, args.task_queue))


if __name__ == "__main__":
    main()
