"""The mirror's HTTP routes (Faust web views): state, promotion, what-if and definitions.

Errors are JSON ``{"reason": ...}`` with a 4xx status; see the README for every route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

from schemas.records import EventKind, HistoryEvent, Value
from streams.mirror.definitions import DefinitionError, DefinitionRegistry, parse_definition
from streams.mirror.registry import Mirrors
from streams.mirror.run import RunMirror, own_variables
from streams.runtime.clock import now_ms
from streams.runtime.forwarding import Forwarding
from streams.runtime.http import BadRequest, NotFound, json_body, json_errors

MAX_WHAT_IF_EVENTS = 10_000


def _state(mirror: RunMirror, own: bool = False) -> dict[str, Any]:
    variables = own_variables(mirror.variables) if own else mirror.variables
    return {"workflow_id": mirror.workflow_id, "run_id": mirror.run_id,
            "workflow_type": mirror.workflow_type, "sequence": mirror.sequence,
            "variables": dict(sorted(variables.items())),
            "pending": sorted(mirror.pending), "duplicates": mirror.duplicates,
            "gaps": [[g.first, g.last] for g in mirror.gaps]}


def _value(name: str, value: Any) -> Value:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise BadRequest(f"value of {name!r} must be null, a boolean, a number or a string")


def what_if_events(mirror: RunMirror, body: Any, default_ms: int) -> list[HistoryEvent]:
    """The hypothetical events of a what-if request, numbered after the mirror's sequence."""
    if not isinstance(body, Mapping) or not isinstance(body.get("events"), list):
        raise BadRequest('body must be {"events": [{"kind": ..., ...}, ...]}')
    items = body["events"]
    if not items or len(items) > MAX_WHAT_IF_EVENTS:
        raise BadRequest(f"give between 1 and {MAX_WHAT_IF_EVENTS} events")
    allowed = {"kind", "action_id", "action_type", "attempt", "values", "timestamp_ms"}
    events = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BadRequest(f"events[{i}] must be an object")
        unknown = set(item) - allowed
        if unknown:
            raise BadRequest(f"events[{i}] has unknown fields {sorted(unknown)}; allowed: "
                             f"{sorted(allowed)}")
        try:
            kind = EventKind(item.get("kind"))
        except ValueError:
            raise BadRequest(f"events[{i}].kind must be one of "
                             f"{[k.value for k in EventKind]}") from None
        values = item.get("values", {})
        if not isinstance(values, Mapping):
            raise BadRequest(f"events[{i}].values must be an object")
        for field in ("action_id", "action_type"):
            if item.get(field) is not None and not isinstance(item[field], str):
                raise BadRequest(f"events[{i}].{field} must be a string")
        if kind.name.startswith("ACTION_") and not item.get("action_id"):
            raise BadRequest(f"events[{i}] ({kind.value}) needs an action_id")
        attempt = item.get("attempt", 1)
        stamp = item.get("timestamp_ms", default_ms)
        if not isinstance(attempt, int) or not isinstance(stamp, int):
            raise BadRequest(f"events[{i}].attempt and timestamp_ms must be integers")
        events.append(HistoryEvent(
            mirror.workflow_id, mirror.run_id, mirror.workflow_type, mirror.sequence + i + 1,
            kind, stamp, action_id=item.get("action_id"), action_type=item.get("action_type"),
            attempt=attempt, values={str(k): _value(k, v) for k, v in values.items()}))
    return events


def register_routes(app: faust.App, mirrors: Mirrors, definitions: DefinitionRegistry, *,
                    forwarding: Forwarding,
                    ensure_restored: Callable[[Iterable[int]], Awaitable[set[int]]],
                    publish_definition: Callable[[dict[str, Any]], Any]) -> None:
    """Add the state, promotion, what-if and definition routes to ``app``. A workflow's routes
    are served by the worker owning it (``forwarding``), once the mirrors of its partition are
    restored (``ensure_restored``: after a rebalance, before the partition's next event)."""

    async def mirror_of(workflow_id: str) -> RunMirror:
        await forwarding.restored(workflow_id, ensure_restored)
        mirror = mirrors.mirror_of(workflow_id)
        if mirror is None:
            raise NotFound(f"no mirror of workflow {workflow_id!r} on this worker (never seen, "
                           "or finished and evicted)")
        return mirror

    @app.page("/shadow/{workflow_id}/state")
    class State(View):
        """GET: the mirror's current state vector and sequence."""

        @forwarding.route("workflow_id")
        @json_errors
        async def get(self, request: Request, workflow_id: str) -> Response:
            return self.json(_state(await mirror_of(workflow_id)))

    @app.page("/shadow/{workflow_id}/promote")
    class Promote(View):
        """POST: everything a new primary needs to resume: the state at the latest sequence
        and the events applied since the last snapshot (the final synchronization step). With
        ``?variables=own``, only the run's own variables and the ``wf.*`` counters; with
        ``?tail=none``, no events (a primary resuming from the state alone): together, an
        answer that does not grow with the history."""

        @forwarding.route("workflow_id")
        @json_errors
        async def post(self, request: Request, workflow_id: str) -> Response:
            which = request.query.get("variables", "all")
            if which not in ("all", "own"):
                raise BadRequest("variables must be all or own")
            tail = request.query.get("tail", "all")
            if tail not in ("all", "none"):
                raise BadRequest("tail must be all or none")
            found = await mirror_of(workflow_id)
            body = _state(found, own=which == "own")
            body["snapshot_sequence"] = found.snapshot_sequence
            if tail == "all":
                body["events_since_snapshot"] = [e.to_avro() for e in found.since_snapshot]
            body["tail_complete"] = found.tail_complete
            return self.json(body)

    @app.page("/shadow/{workflow_id}/what-if")
    class WhatIf(View):
        """POST {"events": [...]}: the state hypothetical events lead to; the mirror is left
        untouched."""

        @forwarding.route("workflow_id")
        @json_errors
        async def post(self, request: Request, workflow_id: str) -> Response:
            found = await mirror_of(workflow_id)
            events = what_if_events(found, await json_body(request),
                                    now_ms())
            fork = found.fork()
            definition = mirrors.definition(found)
            for event in events:
                fork.offer(event, definition)
            changed = {name: {"before": found.variables.get(name), "after": value}
                       for name, value in sorted(fork.variables.items())
                       if found.variables.get(name, ...) != value}
            body = _state(fork)
            body["from_sequence"] = found.sequence
            body["changed"] = changed
            return self.json(body)

    @app.page("/shadow/definitions/{workflow_type}")
    class Definition(View):
        """GET: the definition in force for a workflow type. PUT: register one (JSON)."""

        @json_errors
        async def get(self, request: Request, workflow_type: str) -> Response:
            definition = definitions.get(workflow_type)
            body = definition.to_json()
            body["workflow_type"] = workflow_type
            body["registered"] = workflow_type in definitions.known()
            return self.json(body)

        @json_errors
        async def put(self, request: Request, workflow_type: str) -> Response:
            try:
                definition = parse_definition(await json_body(request), workflow_type)
            except DefinitionError as exc:
                raise BadRequest(str(exc)) from None
            document = definition.to_json()
            await publish_definition(document)
            definitions.register(definition)
            return self.json(document)
