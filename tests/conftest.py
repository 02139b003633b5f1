"""Test set-up: a real broker and ClickHouse of the tests' own, and real worker processes.

The session stack listens on ports of its own and keeps its files in a temporary folder, so a
developer's running stack is left alone; it is stopped and deleted at the end of the session.
Tests that need no services (pure logic) never start it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.stack import LocalStack, temporary_stack
from tests.support import WorkerProcess, free_port
from topology.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the services (it uses the ``stack`` fixture, directly or
    through another fixture) as ``integration``: ``pytest -m "not integration"`` runs the rest
    in seconds, with no broker or ClickHouse."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failed test's report ends with the last lines of each log its processes wrote (worker,
    example worker) in its temporary folder: a CI failure names its cause without a rerun."""
    report = yield
    folder = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(folder, Path):
        for log in sorted(folder.rglob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"last lines of {log.name}", "\n".join(tail)))
    return report


LOG_TAIL_LINES = 40

# Lets two test sessions run side by side on one machine, each with its own stack.
PORT_OFFSET = int(os.environ.get("SHADOWFLOW_TEST_PORT_OFFSET", "0"))


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """The running test stack: a Tansu broker and a ClickHouse server of the tests' own, on
    ports 29092, 29000 and 28123 (plus ``SHADOWFLOW_TEST_PORT_OFFSET``)."""
    with temporary_stack(
            Settings(), "test", broker_port=29092 + PORT_OFFSET,
            clickhouse_port=29000 + PORT_OFFSET, http_port=28123 + PORT_OFFSET,
            clickhouse_database="shadowflow_test", session_timeout_seconds=6.0,
            consumer_batch_seconds=0.2, sink_flush_seconds=0.3, sink_retry_max_seconds=1.0,
            log_level="info") as local:
        yield local


@pytest.fixture
def settings(stack: LocalStack) -> Settings:
    """Settings pointing at the running test stack, with a consumer group of this test's own."""
    return stack.settings.with_overrides(app_id=f"sf-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def worker_factory(settings: Settings,
                   tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Makes worker processes on the test stack; kills any left running at the end."""
    made: list[WorkerProcess] = []

    def make(**overrides: object) -> WorkerProcess:
        worker_settings = settings.with_overrides(
            web_port=free_port(), **overrides)  # type: ignore[arg-type]
        worker = WorkerProcess(worker_settings, tmp_path / f"worker-{len(made)}.log")
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.kill()
