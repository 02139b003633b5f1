"""Helpers the tests share: real worker processes and polling."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from streams.runtime.forwarding import SERVED_BY, partition_of
from topology.worker_process import WorkerProcess, settings_env

__all__ = ["ROOT", "TRACES", "Answer", "Owners", "WorkerProcess", "call", "free_port", "http",
           "one_per_partition", "owners", "quote_id", "settings_env", "steps_of", "wait_for"]

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces" / "wfinstances"


def http(method: str, url: str, body: object = None,
         raw: bytes | None = None) -> tuple[int, Any]:
    """One HTTP request; returns the status and the decoded JSON body."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def steps_of(call: Callable[[], Any], package: str = "streams") -> int:
    """How many lines of ``package``'s Python code ``call`` executes (each loop iteration,
    comprehensions included, counts): a deterministic measure of work, for tests of how a cost
    grows, free of timing noise."""
    root = str(ROOT / package)
    count = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if not frame.f_code.co_filename.startswith(root):
            return None
        if event == "line":
            count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.3,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} "
                                 f"(last value: {value!r})")
        time.sleep(interval)


class Answer(NamedTuple):
    status: int
    body: Any
    served_by: str | None
    retry_after: str | None
    seconds: float


def call(method: str, url: str, body: object = None, raw: bytes | None = None,
         timeout: float = 15.0, token: str | None = None) -> Answer:
    """One HTTP request (with ``Authorization: Bearer token`` when given), answered within
    ``timeout`` or the test fails."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, payload = error.code, error.headers, error.read()
    return Answer(status, json.loads(payload), headers.get(SERVED_BY),
                  headers.get("Retry-After"), time.monotonic() - started)


def quote_id(workflow_id: str) -> str:
    return urllib.parse.quote(workflow_id, safe="")


def one_per_partition(prefix: str, partitions: int) -> list[str]:
    """Workflow ids, one on each partition (a space and a non-ASCII letter included)."""
    found: dict[int, str] = {}
    for i in range(10_000):
        found.setdefault(partition_of(f"{prefix} ü-{i}", partitions), f"{prefix} ü-{i}")
        if len(found) == partitions:
            break
    return [found[p] for p in sorted(found)]


class Owners(dict[int, str]):
    """The owner of each partition."""

    def of(self, workflow_id: str) -> str:
        return self[partition_of(workflow_id, len(self))]


def owners(bases: list[str], ids: list[str], token: str | None = None) -> Owners | None:
    """The owner of the partition of each of ``ids`` (one per partition), once every worker
    agrees and each owns some: None before."""
    found = Owners()
    for partition, workflow_id in enumerate(ids):
        answers = [call("GET", f"{base}/shadow/{quote_id(workflow_id)}/state", token=token)
                   for base in bases]
        served = {a.served_by for a in answers}
        if any(a.status not in (200, 404) for a in answers) or len(served) != 1:
            return None
        found[partition] = served.pop()
    return found if set(found.values()) == set(bases) else None
