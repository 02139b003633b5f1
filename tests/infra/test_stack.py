"""`shadowflow stack up | status | down` as documented, on ports of this test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.stack import LocalStack, StackError, process_alive
from tests.support import ROOT, free_port, settings_env
from topology.settings import Settings


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topology.cli", *args], cwd=ROOT,
                          env={**os.environ, **settings_env(settings)},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def own_settings(tmp_path: Path) -> Settings:
    return Settings().with_overrides(
        broker=f"127.0.0.1:{free_port()}", clickhouse_port=free_port(),
        stack_clickhouse_http_port=free_port(), stack_dir=tmp_path / "stack")


@pytest.mark.integration
def test_up_twice_status_and_down(own_settings: Settings) -> None:
    try:
        first = _cli(own_settings, "stack", "up")
        assert first.returncode == 0, first.stderr
        assert first.stdout.count("running (pid") == 2
        pids = sorted(line.split("pid ")[1].split(")")[0] for line in first.stdout.splitlines())

        second = _cli(own_settings, "stack", "up")
        assert second.returncode == 0, second.stderr
        assert sorted(line.split("pid ")[1].split(")")[0]
                      for line in second.stdout.splitlines()) == pids, "up twice restarts nothing"

        status = _cli(own_settings, "stack", "status")
        assert own_settings.broker in status.stdout
        assert f"127.0.0.1:{own_settings.clickhouse_port}" in status.stdout
        assert status.stdout.count("running (pid") == 2

        down = _cli(own_settings, "stack", "down")
        assert down.returncode == 0, down.stderr
        assert "stopped: clickhouse, broker" in down.stdout
        assert down.stdout.count("stopped ") == 2
        assert not any(process_alive(int(pid)) for pid in pids)
        again = _cli(own_settings, "stack", "down")
        assert "nothing was running" in again.stdout
    finally:
        LocalStack(own_settings).down(purge=True)


def test_missing_clickhouse_fails_with_the_fixing_command(own_settings: Settings,
                                                          tmp_path: Path) -> None:
    stack = LocalStack(own_settings, search_path=str(tmp_path))
    try:
        with pytest.raises(StackError, match="apt-get install -y clickhouse-server"):
            stack.up(timeout=30)
    finally:
        stack.down(purge=True)


def test_port_taken_by_a_foreign_process_is_reported(own_settings: Settings) -> None:
    import socket
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", int(own_settings.broker.rsplit(":", 1)[1])))
        foreign.listen()
        result = _cli(own_settings, "stack", "up")
    LocalStack(own_settings).down(purge=True)
    assert result.returncode == 1
    assert "already answers, but not a process started by shadowflow" in result.stderr
