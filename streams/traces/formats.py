"""Reading real workflow executions as plain values: WfFormat JSON (WfCommons' WfInstances) and
Nextflow trace files.

A WfFormat trace gives each task's type, DAG parents and measured aggregates (runtime, average CPU,
peak memory, bytes read and written), but no per-task start time: schedules built from it are
reconstructions (``traces.schedule``). A Nextflow trace has real submit/start/complete times and
the memory the user requested, but no DAG and no input sizes.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

_ID_SUFFIX = re.compile(r"_ID\d+$")
_REPEAT = re.compile(r"-\d+$")


class TraceError(ValueError):
    """A trace file could not be read as a workflow execution."""


@dataclass(frozen=True, slots=True)
class TraceTask:
    """One task of a traced execution, with its measured aggregates."""

    task_id: str
    task_type: str
    parents: tuple[str, ...]
    runtime_s: float
    cpu_cores: float | None
    memory_bytes: int | None
    read_bytes: int | None
    """Bytes the task read while running (Nextflow's ``rchar``): a measurement, not an input."""
    written_bytes: int | None
    input_bytes: int
    """Total size of the task's input files, known before it starts (WfFormat ``inputFiles``);
    0 where the trace does not say."""
    requested_memory_bytes: int | None = None
    """What the user asked for (Nextflow's ``memory`` column), when known."""
    start_s: float | None = None
    """Real start, in seconds from the workflow's start, when the trace has it."""


@dataclass(frozen=True)
class Trace:
    """A traced workflow execution; ``tasks`` are in an order where parents come first (by real
    start time where the trace has one)."""

    name: str
    workflow_type: str
    path: Path
    tasks: tuple[TraceTask, ...]
    slots: int | None = None
    """Cores the execution had (sum over its machines), when the trace says."""

    @property
    def timed(self) -> bool:
        """Whether every task has a real start time."""
        return all(t.start_s is not None for t in self.tasks)


def load_trace(path: Path) -> Trace:
    """A WfFormat JSON file or a Nextflow trace file, told apart by content."""
    head = Path(path).read_text(errors="replace")[:1].lstrip()
    return load_wfformat(path) if head.startswith("{") else load_nextflow_trace(path)


def load_wfformat(path: Path) -> Trace:
    """Read a WfFormat JSON file."""
    try:
        document = json.loads(Path(path).read_text())
        workflow = document["workflow"]
        specs = {t["id"]: t for t in workflow["specification"]["tasks"]}
        runs = {t["id"]: t for t in workflow["execution"]["tasks"]}
        sizes = {f["id"]: f.get("sizeInBytes", 0) for f in workflow["specification"]["files"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TraceError(f"{path}: not a WfFormat execution: {exc!r}") from exc
    by_name = (document.get("runtimeSystem") or {}).get("name", "").lower() == "nextflow"
    tasks = [_task(spec, runs.get(tid, {}), sizes, by_name) for tid, spec in specs.items()]
    machines = workflow["execution"].get("machines") or []
    cores = sum((m.get("cpu") or {}).get("coreCount") or 0 for m in machines)
    return Trace(Path(path).stem, configuration(Path(path)), Path(path),
                 tuple(_parents_first(tasks)), slots=cores or None)


def configuration(path: Path) -> str:
    """The workflow type of a trace file: its name without the repeat number
    (``blast-chameleon-large-003`` -> ``blast-chameleon-large``), so that repeats of one
    configuration share what is learned across runs."""
    return _REPEAT.sub("", Path(path).stem) or Path(path).stem


def _task(spec: dict[str, Any], run: dict[str, Any], sizes: dict[str, int],
          type_by_name: bool) -> TraceTask:
    program = (run.get("command") or {}).get("program")
    # Nextflow's "program" is the whole script; its process name is the task type.
    task_type = spec["name"] if type_by_name or not program else program
    avg_cpu = run.get("avgCPU")
    return TraceTask(
        task_id=spec["id"], task_type=_ID_SUFFIX.sub("", task_type),
        parents=tuple(spec.get("parents", ())), runtime_s=float(run.get("runtimeInSeconds", 0)),
        cpu_cores=None if avg_cpu is None else float(avg_cpu) / 100.0,
        memory_bytes=run.get("memoryInBytes"), read_bytes=run.get("readBytes"),
        written_bytes=run.get("writtenBytes"),
        input_bytes=sum(sizes.get(f, 0) for f in spec.get("inputFiles", ())),
    )


def _parents_first(tasks: list[TraceTask]) -> list[TraceTask]:
    by_id = {t.task_id: t for t in tasks}
    ordered: list[TraceTask] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = placed
    for root in tasks:
        stack = [(root.task_id, iter(by_id[root.task_id].parents))]
        if state.get(root.task_id):
            continue
        state[root.task_id] = 1
        while stack:
            tid, parents = stack[-1]
            parent = next((p for p in parents if p in by_id and state.get(p) != 2), None)
            if parent is None:
                stack.pop()
                state[tid] = 2
                ordered.append(by_id[tid])
            elif state.get(parent) == 1:
                raise TraceError(f"cycle in the task graph through {parent}")
            else:
                state[parent] = 1
                stack.append((parent, iter(by_id[parent].parents)))
    return ordered


_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "PB": 1024**5,
               "EB": 1024**6}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGTPE]?B)?", re.IGNORECASE)
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TIME_PART = re.compile(r"([\d.]+)\s*(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def _blank(text: str) -> bool:
    return text in ("", "-")


def parse_size(text: str) -> int | None:
    """Nextflow's ``1.5 GB``, ``512 MB``, ``0`` or raw bytes; ``None`` for ``-`` or empty."""
    text = text.strip()
    if _blank(text):
        return None
    match = _SIZE.fullmatch(text)
    if match is None:
        raise TraceError(f"not a size: {text!r}")
    number, unit = match.groups()
    return round(float(number) * _SIZE_UNITS[(unit or "B").upper()])


def parse_duration(text: str) -> float | None:
    """Nextflow's ``1h 2m 3s``, ``350ms``, ``12.5s`` or raw milliseconds, in seconds."""
    text = text.strip()
    if _blank(text):
        return None
    if _NUMBER.fullmatch(text):
        return float(text) / 1000.0
    parts = _TIME_PART.findall(text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
        raise TraceError(f"not a duration: {text!r}")
    return sum(float(n) * _TIME_UNITS[u] for n, u in parts)


def parse_percent(text: str) -> float | None:
    """Nextflow's ``85.2%`` or raw ``85.2``, as a number (85.2); ``None`` for ``-`` or empty."""
    text = text.strip()
    if _blank(text):
        return None
    number = text.removesuffix("%").strip()
    if not _NUMBER.fullmatch(number):
        raise TraceError(f"not a percentage: {text!r}")
    return float(number)


def parse_timestamp(text: str) -> float | None:
    """Nextflow's ``2023-03-21 11:10:20.123`` (local time of the run) or raw epoch milliseconds,
    in seconds; ``None`` for ``-``."""
    text = text.strip()
    if _blank(text):
        return None
    if text.isdigit():
        return int(text) / 1000.0
    for layout in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, layout).timestamp()
        except ValueError:
            continue
    raise TraceError(f"not a timestamp: {text!r}")


def load_nextflow_trace(path: Path) -> Trace:
    """Read a Nextflow trace file: tab- or comma-separated (told apart by the header line), with
    raw numbers (``trace.raw = true``) or Nextflow's human-readable units; columns it does not use
    are ignored. Completed and cached tasks are kept; the task type is the ``process`` column
    (else ``name`` without its tag). ``rchar``/``wchar`` are what a task read and wrote while
    running: kept as measurements, never as the task's input size (unknown when it is sized)."""
    numbered = [(n, line) for n, line in enumerate(Path(path).read_text().splitlines(), start=1)
                if line.strip()]
    if not numbered:
        raise TraceError(f"{path}: empty trace file")
    delimiter = "\t" if "\t" in numbered[0][1] else ","
    header = [h.strip() for h in _fields(numbered[0][1], delimiter)]
    if "realtime" not in header and "duration" not in header:
        raise TraceError(f"{path}: line {numbered[0][0]}: not a Nextflow trace header "
                         "(no realtime or duration column)")
    tasks: list[TraceTask] = []
    starts: list[float | None] = []
    for number, line in numbered[1:]:
        fields = _fields(line, delimiter)
        if len(fields) != len(header):
            raise TraceError(f"{path}: line {number}: {len(fields)} fields where the header has "
                             f"{len(header)}")
        row = dict(zip(header, fields, strict=True))
        if row.get("status", "COMPLETED").strip() not in ("COMPLETED", "CACHED"):
            continue
        try:
            task, start = _nextflow_task(row, number)
        except TraceError as exc:
            raise TraceError(f"{path}: line {number}: {exc}") from None
        tasks.append(task)
        starts.append(start)
    if all(s is not None for s in starts) and starts:
        origin = min(s for s in starts if s is not None)
        tasks = [replace(t, start_s=s - origin) for t, s in zip(tasks, starts, strict=True)]
        tasks.sort(key=lambda t: (t.start_s, t.task_id))
    return Trace(Path(path).stem, configuration(Path(path)), Path(path), tuple(tasks))


def _fields(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def _nextflow_task(row: dict[str, str], number: int) -> tuple[TraceTask, float | None]:
    """One trace row as a task, and its real start (epoch seconds) when the row has one."""
    cpu = parse_percent(row.get("%cpu", "-"))
    process = (row.get("process") or row.get("name", f"task{number}").split(" (")[0]).strip()
    if not process:
        raise TraceError("no process or name")
    task = TraceTask(
        task_id=(row.get("task_id") or str(number)).strip(), task_type=process, parents=(),
        runtime_s=parse_duration(row.get("realtime") or row.get("duration") or "-") or 0.0,
        cpu_cores=None if cpu is None else cpu / 100.0,
        memory_bytes=parse_size(row.get("peak_rss", "-")),
        read_bytes=parse_size(row.get("rchar", "-")),
        written_bytes=parse_size(row.get("wchar", "-")), input_bytes=0,
        requested_memory_bytes=parse_size(row.get("memory", "-")))
    return task, parse_timestamp(row.get("start") or row.get("submit") or "-")
