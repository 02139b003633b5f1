"""The mirror: a workflow run's state rebuilt from its history events alone.

Pure: no I/O, no clock, no commands. The same events give the same state, bit for bit, whatever
order and duplication they arrive in within the reordering window. Events are applied strictly in
sequence order; a duplicate (a sequence already applied or held) is counted and ignored; an event
ahead of the next expected sequence is held until the gap fills; one more than ``max_ahead``
(ten reorder windows) ahead is ignored and counted. A gap is declared missing, and
skipped, when it has stayed open for ``gap_timeout_ms`` of event time (measured by later events'
timestamps), when more than ``reorder_window`` events are held, or when the caller's timer finds
it open for ``gap_timeout_ms`` of processing time (``expire``), so one lost event cannot stall a
run for ever. Only that last rule depends on the clock, and only when an event really is lost.

State variables (the contract a primary's snapshots follow):

- ``wf.status``: ``RUNNING``, ``COMPLETED`` or ``FAILED``;
- ``wf.actions.scheduled|started|completed|failed``: how many such events were applied;
- ``action.<action_id>``: the action's last status (``SCHEDULED``, ``STARTED``, ``COMPLETED``,
  ``FAILED``);
- each key of a ``STATE_UPDATED`` event's ``values``, as given;
- each result of an ``ACTION_COMPLETED`` event, where the workflow definition maps it (by default
  ``result.<action_id>.<key>``, set).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from schemas.records import EventKind, HistoryEvent, Value, is_number
from streams.mirror.definitions import WorkflowDefinition
from streams.mirror.undo import UndoLog

ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()
"""Marks a variable that did not exist (in the undo log and in comparisons)."""

_STATUS = {
    EventKind.WORKFLOW_STARTED: "RUNNING",
    EventKind.WORKFLOW_COMPLETED: "COMPLETED",
    EventKind.WORKFLOW_FAILED: "FAILED",
}
_ACTION = {
    EventKind.ACTION_SCHEDULED: ("SCHEDULED", "wf.actions.scheduled"),
    EventKind.ACTION_STARTED: ("STARTED", "wf.actions.started"),
    EventKind.ACTION_COMPLETED: ("COMPLETED", "wf.actions.completed"),
    EventKind.ACTION_FAILED: ("FAILED", "wf.actions.failed"),
}
COUNTERS = tuple(counter for _, counter in _ACTION.values())
PER_ACTION = ("action.", "result.")
"""The state vector's per-action variables (``action.<id>``, ``result.<id>.<key>``): the rest are
the run's own variables and the ``wf.*`` counters, whose size does not grow with the history."""


def own_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """``variables`` without the per-action ones (``PER_ACTION``)."""
    return {name: value for name, value in variables.items() if not name.startswith(PER_ACTION)}


@dataclass(frozen=True)
class MirrorLimits:
    """Bounds on what one run's mirror holds."""

    reorder_window: int = 10_000
    """Most out-of-order events held for one run before the gap before them is declared."""
    gap_timeout_ms: int = 30_000
    """Processing time a gap may stay open before the timer declares it missing."""
    undo_depth: int = 20_000
    """How many applied events back (at least) ``state_at`` can reach."""
    snapshot_tail: int = 1_000
    """A record is a snapshot once this many events were applied since the last snapshot, or
    as many as the run has variables if that is more (up to half of ``max_tail``), so the tail
    promotion hands over stays short and a snapshot's cost is spread over as many events."""
    max_tail: int = 10_000
    """Most events kept since the last snapshot (promotion's tail). One batch that applies
    more drops the tail: promotion then hands over the state alone, which is complete at its
    sequence, until the snapshot the batch's record takes."""

    def tail_due(self, variables: int) -> int:
        """How long a tail calls for a snapshot, for a run of ``variables`` variables."""
        return min(max(self.snapshot_tail, variables), self.max_tail // 2)

    @property
    def max_ahead(self) -> int:
        """Farthest an event may lie ahead of the last applied sequence: ten reorder windows.
        One beyond is ignored (counted in ``too_far``), so a single hostile sequence number
        cannot make the run jump there once the gap before it is declared."""
        return 10 * self.reorder_window


@dataclass(frozen=True)
class Gap:
    """Sequences ``first..last`` of a run that never arrived and were skipped."""

    first: int
    last: int


@dataclass
class RunMirror:
    """The mirrored state of one workflow run."""

    workflow_id: str
    run_id: str
    workflow_type: str
    limits: MirrorLimits = field(default_factory=MirrorLimits)
    sequence: int = 0
    """The last sequence applied (or skipped as missing)."""
    variables: dict[str, Value] = field(default_factory=dict)
    pending: dict[int, HistoryEvent] = field(default_factory=dict)
    duplicates: int = 0
    too_far: int = 0
    """Events ignored for lying more than ``limits.max_ahead`` beyond ``sequence``."""
    gaps: list[Gap] = field(default_factory=list)
    snapshot_sequence: int = 0
    """Sequence of the last snapshot taken (``mark_snapshot``)."""
    since_snapshot: list[HistoryEvent] = field(default_factory=list)
    """Events applied after the last snapshot, in order: what promotion hands over. At most
    ``limits.max_tail``; empty once ``tail_complete`` is false."""
    tail_complete: bool = True
    """Whether ``since_snapshot`` holds every event since the last snapshot (false after it
    overflowed ``limits.max_tail``, or after a restore from a delta, until the next snapshot)."""
    changed_since_snapshot: set[str] = field(default_factory=set)
    snapshot_parts: list[bytes] = field(default_factory=list)
    """Changelog keys of the last snapshot's extra parts, when it was split
    (``streams.mirror.changelog.split_snapshot``): tombstoned once superseded or evicted."""
    held_since_ms: int = 0
    """Processing time at which the oldest open gap was first seen (for ``expire``)."""
    _undo: UndoLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._undo = UndoLog(self.limits.undo_depth)

    @property
    def finished(self) -> bool:
        """Whether the run completed or failed."""
        return self.variables.get("wf.status") in ("COMPLETED", "FAILED")

    def offer(self, event: HistoryEvent, definition: WorkflowDefinition,
              now_ms: int = 0) -> list[Gap]:
        """Take one event in whatever order it came (``now_ms``: processing time, used only by
        ``expire``); returns the gaps declared missing because of it."""
        seq = event.sequence
        if seq <= self.sequence or seq in self.pending:
            self.duplicates += 1
            return []
        if seq - self.sequence > self.limits.max_ahead:
            self.too_far += 1
            return []
        if seq != self.sequence + 1:
            if not self.pending:
                self.held_since_ms = now_ms
            self.pending[seq] = event
            return self._declare(definition, now_ms)
        self._apply(event, definition)
        self._drain(definition)
        if self.pending:
            self.held_since_ms = now_ms
        return []

    def expire(self, now_ms: int, definition: WorkflowDefinition) -> list[Gap]:
        """Declare open gaps missing once they have been open ``gap_timeout_ms`` of processing
        time (the caller's clock, from a timer or at the end of a stream)."""
        return self._declare(definition, now_ms, by_processing_time=now_ms)

    def state_at(self, sequence: int) -> dict[str, Value] | None:
        """The variables right after ``sequence`` was applied; ``None`` if it is ahead of the
        mirror or older than the undo log reaches."""
        if sequence > self.sequence:
            return None
        state = dict(self.variables)
        for seq, previous in self._undo.newest_first():
            if seq <= sequence:
                return state
            for name, value in previous:
                if value is ABSENT:
                    state.pop(name, None)
                else:
                    state[name] = value
        oldest = self._undo.oldest
        return state if sequence >= (self.sequence + 1 if oldest is None else oldest) - 1 else None

    def fork(self) -> RunMirror:
        """An independent copy, for what-if questions."""
        return copy.deepcopy(self)

    def mark_snapshot(self) -> None:
        """Record that a snapshot of the current state was taken."""
        self.snapshot_sequence = self.sequence
        self.since_snapshot.clear()
        self.tail_complete = True
        self.changed_since_snapshot.clear()

    def snapshot_due(self) -> bool:
        """Whether the tail since the last snapshot is long enough (or was lost) to call for a
        new snapshot rather than a delta."""
        return (not self.tail_complete
                or len(self.since_snapshot) >= self.limits.tail_due(len(self.variables)))

    def _declare(self, definition: WorkflowDefinition, now_ms: int,
                 by_processing_time: int | None = None) -> list[Gap]:
        declared: list[Gap] = []
        while self.pending:
            first_held = min(self.pending)
            overdue = (
                len(self.pending) > self.limits.reorder_window
                or (by_processing_time is not None
                    and by_processing_time - self.held_since_ms > self.limits.gap_timeout_ms))
            if not overdue:
                break
            gap = Gap(self.sequence + 1, first_held - 1)
            self.gaps.append(gap)
            declared.append(gap)
            self.sequence = first_held - 1
            self._drain(definition)
            self.held_since_ms = now_ms
        return declared

    def _drain(self, definition: WorkflowDefinition) -> None:
        while (event := self.pending.pop(self.sequence + 1, None)) is not None:
            self._apply(event, definition)

    def _apply(self, event: HistoryEvent, definition: WorkflowDefinition) -> None:
        previous: dict[str, Any] = {}
        variables = self.variables

        def assign(name: str, value: Value) -> None:
            # Interned: the undo log and the variables then share one string per name.
            name = intern(name)
            if name not in previous:
                previous[name] = variables.get(name, ABSENT)
            variables[name] = value

        kind = event.kind
        if kind in _STATUS:
            if kind is EventKind.WORKFLOW_STARTED:
                # A run resumed from a promoted state starts from it.
                for name, value in event.values.items():
                    assign(name, value)
            assign("wf.status", _STATUS[kind])
            if kind is EventKind.WORKFLOW_STARTED:
                for counter in COUNTERS:
                    if counter not in variables:
                        assign(counter, 0)
        elif kind in _ACTION:
            status, counter = _ACTION[kind]
            action_id = event.action_id or ""
            assign(f"action.{action_id}", status)
            assign(counter, _as_int(variables.get(counter)) + 1)
            if kind is EventKind.ACTION_COMPLETED:
                for key, value in event.values.items():
                    mapping = definition.result_mapping(event.action_type, action_id, key)
                    current = variables.get(mapping.variable)
                    if mapping.mode == "add" and is_number(value) and is_number(current):
                        value = current + value  # type: ignore[operator]
                    assign(mapping.variable, value)
        elif kind is EventKind.STATE_UPDATED:
            for name, value in event.values.items():
                assign(name, value)
        self.sequence = event.sequence
        if self.tail_complete:
            if len(self.since_snapshot) < self.limits.max_tail:
                self.since_snapshot.append(event)
            else:
                self.since_snapshot.clear()
                self.tail_complete = False
        self.changed_since_snapshot.update(previous)
        self._undo.record(event.sequence, previous)


def apply_effect(mirror: RunMirror, event: HistoryEvent, definition: WorkflowDefinition) -> None:
    """Apply an event's effect with no sequence check, as an engine that re-executes a side
    effect does. The mirror never does this; it serves to simulate faulty primaries."""
    mirror._apply(event, definition)


def _as_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def rebuild(events: list[HistoryEvent], definition: WorkflowDefinition,
            limits: MirrorLimits | None = None) -> RunMirror:
    """A fresh mirror of the run the events belong to, after taking them in the given order."""
    first = events[0]
    mirror = RunMirror(first.workflow_id, first.run_id, first.workflow_type,
                       limits or MirrorLimits())
    for event in events:
        mirror.offer(event, definition)
    return mirror
