"""Reading real workflow executions (WfFormat JSON, as in WfCommons' WfInstances) as plain values.

A trace gives each task's type, DAG parents and measured aggregates (runtime, average CPU, peak
memory, bytes read and written), but no per-task start time: schedules built from it are
reconstructions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ID_SUFFIX = re.compile(r"_ID\d+$")


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
    written_bytes: int | None
    input_bytes: int


@dataclass(frozen=True)
class Trace:
    """A traced workflow execution; ``tasks`` are in an order where parents come first."""

    name: str
    workflow_type: str
    path: Path
    tasks: tuple[TraceTask, ...]


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
    return Trace(Path(path).stem, Path(path).stem.split("-")[0], Path(path),
                 tuple(_parents_first(tasks)))


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
