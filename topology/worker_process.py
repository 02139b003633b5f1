"""A ``shadowflow worker`` as a child process: what the demo and the tests run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from topology.settings import Settings, env_name


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the SHADOWFLOW_* variables a subprocess reads."""
    return {env_name(f.name): str(getattr(settings, f.name)) for f in fields(Settings)}


class WorkerProcess:
    """A ``shadowflow worker`` running as a real process, as in production."""

    def __init__(self, settings: Settings, log_path: Path,
                 command: Sequence[str] | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.command = list(command or [sys.executable, "-m", "topology.cli", "worker"])
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start the worker and wait until Faust says it is ready and has partitions."""
        env = {**os.environ, **settings_env(self.settings), **self.extra_env}
        # Readiness is read from Faust's INFO log line, so never run quieter than that.
        if self.settings.log_level.lower() not in ("debug", "info"):
            env["SHADOWFLOW_LOG_LEVEL"] = "info"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "Worker ready" not in self.log()[offset:]:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n"
                                     f"{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"worker not ready in {timeout:.0f}s:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode
