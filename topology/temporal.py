"""Shadowing a real Temporal server: ``shadowflow temporal follow`` and ``promote``.

**Follow.** The adapter lists the executions the visibility query selects
(``SHADOWFLOW_TEMPORAL_QUERY``; empty: all) every ``SHADOWFLOW_TEMPORAL_POLL_SECONDS`` and follows
each run's history with Temporal's long poll (``GetWorkflowExecutionHistory`` with
``wait_new_event``), page by page: each page is translated (``streams.temporal.translate``: one
shadowflow event per Temporal event, sequence = event id), published on ``wf.history`` in
envelopes, flushed, and only then checkpointed (``SHADOWFLOW_TEMPORAL_CHECKPOINT_FILE``: the last
event id published per run). After a restart each run is read again from its start, to rebuild
what its activities are, and published from after its checkpoint: nothing is lost, and what a
crash between a flush and its checkpoint publishes twice is absorbed (the mirror ignores a
sequence it has, ClickHouse rows collapse). A run continued as new is followed into its new run.

**State.** Every ``SHADOWFLOW_TEMPORAL_SNAPSHOT_EVERY`` events, at a workflow task's end, the
adapter asks the workflow's ``shadowflow_state`` query (``streams.temporal.state``) and publishes
the answer on ``wf.state`` as the primary's ``StateSnapshot``, at the sequence ending the commands
of the workflow task it reflects. It does not ask while catching up on events older than
``CATCHING_UP_SECONDS`` (the answer would be the state now, far ahead), nor for 30 s after a query
went unanswered (no worker, or no such query).

**Promote.** ``promote`` asks a shadowflow worker for the mirror's state
(``POST /shadow/{id}/promote``) and starts the workflow again with ``{"shadowflow_resume":
variables}`` (its own variables and the ``wf.*`` counters: ``mirror_state``), terminating the
failed or orphaned execution if it still runs, so it goes on from there without replaying its
history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent as TemporalEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from schemas.records import HistoryEvent, StateSnapshot
from streams.runtime.clock import now_ms
from streams.runtime.kafka import Publisher
from streams.temporal.state import QUERY, RESUME_KEY
from streams.temporal.translate import RunTranslator, command_task
from topology.settings import Settings

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
CATCHING_UP_SECONDS = 10.0
"""A workflow task completed longer ago than this is history being caught up on: no query."""
QUERY_TIMEOUT = timedelta(seconds=2)
QUIET_AFTER_FAILED_QUERY = 30.0
LONG_POLL = timedelta(seconds=70)
"""Longest one long poll may take (the server answers within about 20 s when nothing comes)."""


class Checkpoints:
    """The last event id published per run, in a JSON file rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.positions: dict[str, int] = {}
        self.finished: set[str] = set()
        if self.path.exists():
            document = json.loads(self.path.read_text() or "{}")
            self.positions = {k: int(v) for k, v in document.get("positions", {}).items()}
            self.finished = set(document.get("finished", []))

    @staticmethod
    def key(workflow_id: str, run_id: str) -> str:
        return f"{workflow_id}\x1f{run_id}"

    def position(self, workflow_id: str, run_id: str) -> int:
        """The last event id published of the run (0: none)."""
        return self.positions.get(self.key(workflow_id, run_id), 0)

    def save(self, workflow_id: str, run_id: str, event_id: int, finished: bool = False) -> None:
        """Record that the run's events up to ``event_id`` are on the broker."""
        key = self.key(workflow_id, run_id)
        self.positions[key] = max(event_id, self.positions.get(key, 0))
        if finished:
            self.finished.add(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"positions": self.positions,
                                         "finished": sorted(self.finished)}))
        os.replace(temporary, self.path)


@dataclass
class _Snapshots:
    """The run's pending state snapshots: the query answered with the state as of the workflow
    task started at ``history_length``; it is published at the sequence where that task's
    commands end, once the adapter has read past them."""

    every: int
    since_last: int = 0
    quiet_until: float = 0.0
    """After an unanswered query (no worker, no such query), none is asked before this
    (monotonic seconds): a run being caught up on, or whose worker is gone, costs no waits."""
    waiting: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    task_end: dict[int, int] = field(default_factory=dict)
    highest: int = 0

    def saw(self, event: TemporalEvent) -> None:
        task = command_task(event)
        if task is not None:
            self.task_end[task] = max(self.task_end.get(task, task), event.event_id)
        self.highest = event.event_id
        self.since_last += 1

    def due(self, event: TemporalEvent) -> bool:
        """Whether to ask for the state after ``event``: a workflow task just ended, and it is
        recent (the query answers with the state now: while the adapter catches up on an old
        history, asking would only cost a wait)."""
        return (event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                and self.since_last >= self.every and time.monotonic() >= self.quiet_until
                and time.time() - event.event_time.ToMilliseconds() / 1000
                < CATCHING_UP_SECONDS)

    def ready(self, closed: bool) -> list[tuple[int, dict[str, Any]]]:
        """The waiting snapshots whose task's commands have all been read, with their sequence.
        Temporal writes a task's completion and its commands together, so a task is complete
        once an event after its commands was read (or the run closed)."""
        out, keep = [], []
        for length, variables in self.waiting:
            completed = length + 1  # WORKFLOW_TASK_COMPLETED follows WORKFLOW_TASK_STARTED
            end = self.task_end.get(completed, completed)
            if self.highest > end or (closed and self.highest >= completed):
                out.append((end, variables))
            else:
                keep.append((length, variables))
        self.waiting = keep
        return out


class Adapter:
    """Follows the histories of a Temporal namespace onto the broker (see the module docstring)."""

    def __init__(self, settings: Settings, client: Client, publisher: Publisher | None = None,
                 checkpoints: Checkpoints | None = None) -> None:
        self.settings = settings
        self.client = client
        self.publisher = publisher or Publisher(settings)
        self.checkpoints = checkpoints or Checkpoints(settings.temporal_checkpoint_file)
        self.published = 0
        self.snapshots_published: list[StateSnapshot] = []
        self._following: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Discover and follow runs until ``stop`` is set (or for ever)."""
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                await self.discover()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.temporal_poll_seconds)
        finally:
            for task in self._following.values():
                task.cancel()
            await asyncio.gather(*self._following.values(), return_exceptions=True)

    async def discover(self) -> None:
        """Start following every selected run not followed or finished yet."""
        query = self.settings.temporal_query or None
        async for execution in self.client.list_workflows(query):
            key = (execution.id, execution.run_id)
            if (key in self._following
                    or Checkpoints.key(*key) in self.checkpoints.finished):
                continue
            self._following[key] = asyncio.ensure_future(self.follow(*key))

    async def follow(self, workflow_id: str, run_id: str) -> None:
        """Follow one run to its end, then the run it continued as, if any (unless discovery
        already follows that one)."""
        while run_id:
            try:
                following = run_id
                run_id = await self._follow_run(workflow_id, run_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following %s/%s failed; retrying in 1s", workflow_id, run_id)
                await asyncio.sleep(1.0)
                continue
            if run_id:
                log.info("%s: run %s continued as %s", workflow_id, following, run_id)
                if (workflow_id, run_id) in self._following:
                    return
                task = asyncio.current_task()
                if task is not None:
                    self._following[(workflow_id, run_id)] = task  # type: ignore[assignment]

    async def follow_once(self, workflow_id: str, run_id: str) -> str:
        """Follow one run to its end; returns the run it continued as ("" if none)."""
        return await self._follow_run(workflow_id, run_id)

    async def _follow_run(self, workflow_id: str, run_id: str) -> str:
        translator = RunTranslator(workflow_id, run_id)
        snapshots = _Snapshots(self.settings.temporal_snapshot_every)
        done = self.checkpoints.position(workflow_id, run_id)
        request = GetWorkflowExecutionHistoryRequest(
            namespace=self.client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            maximum_page_size=PAGE_SIZE, wait_new_event=True)
        next_run = ""
        while True:
            response = await self.client.workflow_service.get_workflow_execution_history(
                request, retry=True, timeout=LONG_POLL)
            events = list(response.history.events)
            fresh: list[HistoryEvent] = []
            ask = False
            for event in events:
                translated = translator.translate(event)  # every one: it learns activities
                snapshots.saw(event)
                attributes = event.WhichOneof("attributes") or ""
                next_run = getattr(getattr(event, attributes), "new_execution_run_id",
                                   "") or next_run
                if event.event_id > done:
                    fresh.append(translated)
                    ask = ask or snapshots.due(event)
            closed = not response.next_page_token
            if fresh:
                self.publisher.send_history(fresh, per_message=500)
                self.publisher.flush()
                done = fresh[-1].sequence
                self.published += len(fresh)
            # Saved before the next await: a cancelled adapter never publishes a page twice.
            self.checkpoints.save(workflow_id, run_id, done, finished=closed)
            if ask and not closed:
                await self._ask_state(workflow_id, run_id, snapshots)
            self._publish_snapshots(workflow_id, run_id, snapshots.ready(closed))
            if closed:
                return next_run
            request.next_page_token = response.next_page_token

    async def _ask_state(self, workflow_id: str, run_id: str, snapshots: _Snapshots) -> None:
        handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        try:
            answer = await handle.query(QUERY, rpc_timeout=QUERY_TIMEOUT)
        except Exception as exc:  # no such query, worker gone: the mirror goes on alone
            log.debug("%s/%s: no state from the %s query: %s", workflow_id, run_id, QUERY, exc)
            snapshots.quiet_until = time.monotonic() + QUIET_AFTER_FAILED_QUERY
            return
        if isinstance(answer, dict) and isinstance(answer.get("variables"), dict):
            snapshots.waiting.append((int(answer.get("history_length", 0)),
                                      answer["variables"]))
            snapshots.since_last = 0

    def _publish_snapshots(self, workflow_id: str, run_id: str,
                           ready: Iterable[tuple[int, dict[str, Any]]]) -> None:
        sent = False
        for sequence, variables in ready:
            snapshot = StateSnapshot(workflow_id, run_id, sequence, now_ms(), variables)
            self.publisher.send_state(snapshot)
            self.snapshots_published.append(snapshot)
            sent = True
        if sent:
            self.publisher.flush()


async def connect(settings: Settings) -> Client:
    """A client of the configured Temporal server and namespace."""
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)


def worker_api(settings: Settings, method: str, path: str) -> dict[str, Any] | None:
    """A shadowflow worker's JSON answer to ``method path`` (with the API token if set), at
    ``SHADOWFLOW_TEMPORAL_SHADOWFLOW_URL`` (else this host's); ``None`` for a 404."""
    request = urllib.request.Request(
        f"{settings.temporal_shadowflow_url or settings.advertised_url}{path}",
        data=b"" if method == "POST" else None, method=method)
    token = settings.api_token_value()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def mirror_state(settings: Settings, workflow_id: str, full: bool = False) -> dict[str, Any]:
    """The mirror's promotion answer: the run's own variables and the ``wf.*`` counters, no
    events (with ``full``, every variable, the per-action ``action.*`` and ``result.*`` too, and
    the events since the mirror's last snapshot: what those did is in the own variables and the
    failed run's history, and without them the answer does not grow with the history)."""
    answer = worker_api(settings, "POST", f"/shadow/{quote(workflow_id, safe='')}/promote"
                        + ("" if full else "?variables=own&tail=none"))
    if answer is None:
        raise LookupError(f"no mirror of {workflow_id!r} on the shadowflow worker")
    return answer


def mirrored_state(settings: Settings, workflow_id: str) -> dict[str, Any]:
    """The mirror's current state (``GET /shadow/{id}/state``); ``{}`` while it cannot say
    (no mirror yet, the workers rebalancing)."""
    try:
        return worker_api(settings, "GET", f"/shadow/{quote(workflow_id, safe='')}/state") or {}
    except urllib.error.HTTPError:
        return {}


async def promote(settings: Settings, client: Client, workflow_id: str,
                  task_queue: str | None = None, full: bool = False,
                  ) -> tuple[str, dict[str, Any]]:
    """Start ``workflow_id`` again from the mirror's state (``mirror_state``); returns the new
    run id and the mirror's state it resumed from."""
    state = await asyncio.to_thread(mirror_state, settings, workflow_id, full)
    handle = await client.start_workflow(
        state["workflow_type"], {RESUME_KEY: state["variables"]},
        id=workflow_id,
        task_queue=task_queue or settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
    log.info("promoted %s from the mirror's state at sequence %d: new run %s", workflow_id,
             state["sequence"], handle.result_run_id)
    return handle.result_run_id or "", state


async def poll_until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """``await check()`` every 0.1 s until it gives something truthy (returned);
    ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


async def first_activity_scheduled(handle: Any) -> float | None:
    """When (epoch seconds, the server's clock) the run of ``handle`` first scheduled an
    activity; ``None`` while it has not."""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            return event.event_time.ToDatetime(tzinfo=UTC).timestamp()
    return None


@asynccontextmanager
async def following(settings: Settings) -> AsyncIterator[tuple[Client, Adapter]]:
    """A client and an adapter following the selected runs until the block ends."""
    client = await connect(settings)
    adapter = Adapter(settings, client)
    stop = asyncio.Event()
    task = asyncio.ensure_future(adapter.run(stop))
    try:
        yield client, adapter
    finally:
        stop.set()
        await task
