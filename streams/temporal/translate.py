"""Temporal history events as shadowflow ``HistoryEvent``s (pure).

Every Temporal event becomes exactly one shadowflow event whose ``sequence`` is the Temporal
event id, so a run's history has no gap and the mirror's dedupe and gap rules apply unchanged.
Its ``labels["temporal.event_type"]`` names the Temporal event.

| Temporal event | shadowflow event |
|---|---|
| workflow execution started | ``WORKFLOW_STARTED`` (values: a resumed run's state) |
| … completed, continued as new | ``WORKFLOW_COMPLETED`` |
| … failed, timed out, terminated, canceled | ``WORKFLOW_FAILED`` (``error``) |
| activity task scheduled | ``ACTION_SCHEDULED`` (action id = activity id, type = activity type) |
| activity task started | ``ACTION_STARTED`` (its attempt) |
| activity task completed | ``ACTION_COMPLETED`` (values: the result's scalar fields) |
| activity task failed, timed out, canceled | ``ACTION_FAILED`` (``error``) |
| properties modified (``upsert_memo``) | ``STATE_UPDATED`` (values: the memo's scalars) |
| anything else (workflow tasks, timers, signals, markers, …) | ``STATE_UPDATED`` with no values |

Timers, signals and markers change no variable: a workflow that wants them in its state vector
records them with ``upsert_memo`` (``streams.temporal.state.ShadowState`` does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent as TemporalEvent

from schemas.records import EventKind, HistoryEvent, Value
from streams.temporal.state import RESUME_KEY

EVENT_TYPE_LABEL = "temporal.event_type"

_WORKFLOW = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: EventKind.WORKFLOW_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: EventKind.WORKFLOW_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: EventKind.WORKFLOW_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: EventKind.WORKFLOW_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: EventKind.WORKFLOW_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: EventKind.WORKFLOW_FAILED,
}
_ACTIVITY_END = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED: EventKind.ACTION_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: EventKind.ACTION_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: EventKind.ACTION_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: EventKind.ACTION_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: EventKind.ACTION_FAILED,
}
MAX_STRING = 65_536


def payload_value(payload: Payload) -> Any:
    """A JSON payload's value (the SDKs' default converter); ``None`` for any other encoding."""
    if payload.metadata.get("encoding") != b"json/plain":
        return None
    try:
        return json.loads(payload.data)
    except ValueError:
        return None


def scalars(document: Any) -> dict[str, Value]:
    """The fields of a JSON object that a state vector can hold: null, booleans, finite
    numbers, strings (at most ``MAX_STRING`` characters); anything else is left out."""
    if not isinstance(document, Mapping):
        return {}
    out: dict[str, Value] = {}
    for key, value in document.items():
        if value is None or isinstance(value, bool | int | str):
            if not isinstance(value, str) or len(value) <= MAX_STRING:
                out[str(key)] = value
        elif isinstance(value, float) and math.isfinite(value):
            out[str(key)] = value
    return out


def command_task(event: TemporalEvent) -> int | None:
    """The id of the ``WORKFLOW_TASK_COMPLETED`` event whose commands made ``event``, if any."""
    attributes = event.WhichOneof("attributes")
    if attributes is None:
        return None
    task = getattr(getattr(event, attributes), "workflow_task_completed_event_id", 0)
    return task or None


@dataclass
class RunTranslator:
    """Translates one Temporal run's events in order; remembers what its activities are (a
    completion names only its scheduling event)."""

    workflow_id: str
    run_id: str
    workflow_type: str = "unknown"
    _activities: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Scheduling event id -> (activity id, activity type)."""

    def translate(self, event: TemporalEvent) -> HistoryEvent:
        """The shadowflow event of ``event`` (see the module docstring)."""
        kind, extra = EventKind.STATE_UPDATED, {}
        event_type = event.event_type
        if event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            started = event.workflow_execution_started_event_attributes
            self.workflow_type = started.workflow_type.name or self.workflow_type
            kind = EventKind.WORKFLOW_STARTED
            first = (payload_value(started.input.payloads[0])
                     if started.input.payloads else None)
            resume = first.get(RESUME_KEY) if isinstance(first, Mapping) else None
            extra = {"values": scalars(resume)}
        elif event_type in _WORKFLOW:
            kind = _WORKFLOW[event_type]
            if kind is EventKind.WORKFLOW_FAILED:
                extra = {"error": EventType.Name(event_type).removeprefix("EVENT_TYPE_")}
        elif event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            self._activities[event.event_id] = (scheduled.activity_id,
                                                scheduled.activity_type.name)
            kind = EventKind.ACTION_SCHEDULED
            extra = {"action_id": scheduled.activity_id,
                     "action_type": scheduled.activity_type.name}
        elif event_type in _ACTIVITY_END:
            kind = _ACTIVITY_END[event_type]
            extra = self._activity_end(event, kind)
        elif event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
            memo = event.workflow_properties_modified_event_attributes.upserted_memo
            extra = {"values": scalars({name: payload_value(payload)
                                        for name, payload in memo.fields.items()})}
        return HistoryEvent(
            self.workflow_id, self.run_id, self.workflow_type, event.event_id, kind,
            event.event_time.ToMilliseconds(),
            labels={EVENT_TYPE_LABEL: EventType.Name(event_type).removeprefix("EVENT_TYPE_")},
            **extra)

    def _activity_end(self, event: TemporalEvent, kind: EventKind) -> dict[str, Any]:
        attributes = getattr(event, event.WhichOneof("attributes") or "")
        activity_id, activity_type = self._activities.get(attributes.scheduled_event_id,
                                                          ("", ""))
        extra: dict[str, Any] = {"action_id": activity_id or f"scheduled-"
                                 f"{attributes.scheduled_event_id}",
                                 "action_type": activity_type or None}
        if kind is EventKind.ACTION_STARTED:
            extra["attempt"] = max(1, event.activity_task_started_event_attributes.attempt)
        elif kind is EventKind.ACTION_COMPLETED:
            result = event.activity_task_completed_event_attributes.result.payloads
            extra["values"] = scalars(payload_value(result[0])) if result else {}
        else:
            failure = getattr(attributes, "failure", None)
            message = failure.message if failure is not None and failure.message else ""
            extra["error"] = (message or EventType.Name(event.event_type)
                              .removeprefix("EVENT_TYPE_"))[:MAX_STRING]
        return extra

    def translate_all(self, events: Iterable[TemporalEvent]) -> list[HistoryEvent]:
        """``translate`` each of ``events``, in order."""
        return [self.translate(event) for event in events]
