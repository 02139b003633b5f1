"""The HTTP API on the workers (Faust web views).

Requests about a workflow are routed to the worker that owns its partition (``topic_route``),
which is why producers must partition by Kafka's default (murmur2) hash of the workflow id.
Errors are JSON ``{"reason": ...}`` with a 4xx status; see the README for every route.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

from schemas.records import EventKind, HistoryEvent, Value
from streams.definitions import DefinitionError, DefinitionRegistry, parse_definition
from streams.mirror import RunMirror
from streams.mirrors import Mirrors
from streams.shadow import RunShadow
from streams.shadow_agents import ShadowService

log = logging.getLogger(__name__)

MAX_WHAT_IF_EVENTS = 10_000


class BadRequest(ValueError):
    """The request cannot be served as sent; the message is the reason given to the client."""


class NotFound(LookupError):
    """The thing asked about is not here; the message is the reason given to the client."""


Handler = Callable[..., Awaitable[Response]]


def json_errors(handler: Handler) -> Handler:
    """Turn ``BadRequest`` into 400, ``NotFound`` into 404 and anything else into a logged 500,
    each with a JSON body ``{"reason": ...}``."""

    @functools.wraps(handler)
    async def wrapped(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(view, request, *args, **kwargs)
        except BadRequest as exc:
            return view.json({"reason": str(exc)}, status=400)
        except NotFound as exc:
            return view.json({"reason": str(exc)}, status=404)
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            return view.json({"reason": f"internal error: {exc!r}"}, status=500)

    return wrapped


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None


def _state(mirror: RunMirror) -> dict[str, Any]:
    return {"workflow_id": mirror.workflow_id, "run_id": mirror.run_id,
            "workflow_type": mirror.workflow_type, "sequence": mirror.sequence,
            "variables": dict(sorted(mirror.variables.items())),
            "pending": sorted(mirror.pending), "duplicates": mirror.duplicates,
            "gaps": [[g.first, g.last] for g in mirror.gaps]}


def _value(name: str, value: Any) -> Value:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise BadRequest(f"value of {name!r} must be null, a boolean, a number or a string")


def what_if_events(mirror: RunMirror, body: Any, now_ms: int) -> list[HistoryEvent]:
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
        stamp = item.get("timestamp_ms", now_ms)
        if not isinstance(attempt, int) or not isinstance(stamp, int):
            raise BadRequest(f"events[{i}].attempt and timestamp_ms must be integers")
        events.append(HistoryEvent(
            mirror.workflow_id, mirror.run_id, mirror.workflow_type, mirror.sequence + i + 1,
            kind, stamp, action_id=item.get("action_id"), action_type=item.get("action_type"),
            attempt=attempt, values={str(k): _value(k, v) for k, v in values.items()}))
    return events


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}
_USAGE_KEYS = {"cpu": "cpu_cores", "cpu_cores": "cpu_cores", "memory": "memory_bytes",
               "mem": "memory_bytes", "memory_bytes": "memory_bytes", "network": "network_bytes",
               "net": "network_bytes", "network_bytes": "network_bytes", "cost": "cost"}
_USAGE_VALUE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)$")


def parse_usage(text: str) -> dict[str, float]:
    """``cpu=1.5,memory=2GiB,network=300MB,cost=0.12`` -> amounts by resource class.

    CPU in cores; memory and network in bytes, with an optional unit (B, KB/MB/GB/TB decimal,
    KiB/MiB/GiB/TiB binary); cost as a plain number. ``BadRequest`` names the bad part."""
    usage: dict[str, float] = {}
    for part in text.split(","):
        name, sep, raw = part.partition("=")
        key = _USAGE_KEYS.get(name.strip().lower())
        if not sep or key is None:
            raise BadRequest(f"{part!r}: expected name=value with name one of cpu, memory, "
                             "network, cost (for example cpu=1.5,memory=2GiB)")
        match = _USAGE_VALUE.match(raw.strip())
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS or (unit and key in ("cpu_cores", "cost")):
            raise BadRequest(f"{part!r}: {raw.strip()!r} is not a valid amount for {name}")
        if key in usage:
            raise BadRequest(f"{name} is given twice")
        usage[key] = float(match.group(1)) * _UNITS[unit]
    if not {"memory_bytes", "cpu_cores"} & usage.keys():
        raise BadRequest("give at least memory or cpu")
    return usage


def register_routes(app: faust.App, mirrors: Mirrors, definitions: DefinitionRegistry, *,
                    history: faust.TopicT,
                    publish_definition: Callable[[dict[str, Any]], Any]) -> None:
    """Add the state, promotion, what-if and definition routes to ``app``."""

    def mirror_of(workflow_id: str) -> RunMirror:
        mirror = mirrors.mirror_of(workflow_id)
        if mirror is None:
            raise NotFound(f"no mirror of workflow {workflow_id!r} on this worker (never seen, "
                           "or finished and evicted)")
        return mirror

    @app.page("/shadow/{workflow_id}/state")
    class State(View):
        """GET: the mirror's current state vector and sequence."""

        @app.topic_route(topic=history, match_info="workflow_id")
        @json_errors
        async def get(self, request: Request, workflow_id: str) -> Response:
            return self.json(_state(mirror_of(workflow_id)))

    @app.page("/shadow/{workflow_id}/promote")
    class Promote(View):
        """POST: everything a new primary needs to resume: the state at the latest sequence
        and the events applied since the last snapshot (the final synchronization step)."""

        @app.topic_route(topic=history, match_info="workflow_id")
        @json_errors
        async def post(self, request: Request, workflow_id: str) -> Response:
            found = mirror_of(workflow_id)
            body = _state(found)
            body["snapshot_sequence"] = found.snapshot_sequence
            body["events_since_snapshot"] = [e.to_avro() for e in found.since_snapshot]
            return self.json(body)

    @app.page("/shadow/{workflow_id}/what-if")
    class WhatIf(View):
        """POST {"events": [...]}: the state hypothetical events lead to; the mirror is left
        untouched."""

        @app.topic_route(topic=history, match_info="workflow_id")
        @json_errors
        async def post(self, request: Request, workflow_id: str) -> Response:
            found = mirror_of(workflow_id)
            events = what_if_events(found, await _json_body(request),
                                    time.time_ns() // 1_000_000)
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
                definition = parse_definition(await _json_body(request), workflow_type)
            except DefinitionError as exc:
                raise BadRequest(str(exc)) from None
            document = definition.to_json()
            await publish_definition(document)
            definitions.register(definition)
            return self.json(document)


def register_shadow_routes(app: faust.App, service: ShadowService, *,
                           history: faust.TopicT) -> None:
    """Add the seed routes of the shadow workflows: create, prediction, feedback."""
    shadows = service.shadows

    def run_of(workflow_id: str) -> RunShadow:
        run = shadows.shadow_of(workflow_id)
        if run is None:
            raise NotFound(f"no shadow of workflow {workflow_id!r} on this worker (never "
                           "created, or finished and evicted)")
        return run

    @app.page("/shadow/create/{workflow_id}")
    class Create(View):
        """POST [{"run_id": ..., "workflow_type": ...}]: make the workflow's shadow (idempotent:
        an existing one is left as it is)."""

        @app.topic_route(topic=history, match_info="workflow_id")
        @json_errors
        async def post(self, request: Request, workflow_id: str) -> Response:
            body = await _json_body(request) or {}
            if not isinstance(body, Mapping):
                raise BadRequest("body, when given, must be a JSON object")
            run_id = body.get("run_id", workflow_id)
            workflow_type = body.get("workflow_type", "unknown")
            if not isinstance(run_id, str) or not isinstance(workflow_type, str):
                raise BadRequest("run_id and workflow_type must be strings")
            existed = (workflow_id, run_id) in shadows.runs
            effects = shadows.create(workflow_id, run_id, workflow_type,
                                     time.time_ns() // 1_000_000)
            await (await service.publish(effects))
            return self.json({"workflow_id": workflow_id, "run_id": run_id,
                              "workflow_type": workflow_type, "created": not existed},
                             status=200 if existed else 201)

    @app.page("/shadow/{workflow_id}/prediction/{action_id}")
    class PredictionView(View):
        """GET: the forecast, confidence and source for a scheduled action, or for a likely next
        action (``next:<action type>``)."""

        @app.topic_route(topic=history, match_info="workflow_id")
        @json_errors
        async def get(self, request: Request, workflow_id: str, action_id: str) -> Response:
            run = run_of(workflow_id)
            action = run.actions.get(action_id)
            prediction = action.prediction if action else None
            if prediction is None and action_id.startswith("next:"):
                prediction = run.likely.get(action_id.removeprefix("next:"))
            if prediction is None:
                raise NotFound(f"no prediction for action {action_id!r} of {workflow_id!r}; "
                               f"known: {sorted(run.actions)[:20]}, likely next: "
                               f"{sorted('next:' + t for t in run.likely)}")
            body = prediction.to_json()
            body.update(workflow_id=run.workflow_id, run_id=run.run_id)
            return self.json(body)

    @app.page("/shadow/{workflow_id}/feedback/{action_id}/{usage}")
    class FeedbackView(View):
        """PUT: the action's actual usage (``cpu=1.5,memory=2GiB,network=300MB,cost=0.12``),
        scored against its forecast and learned from."""

        @app.topic_route(topic=history, match_info="workflow_id")
        @json_errors
        async def put(self, request: Request, workflow_id: str, action_id: str,
                      usage: str) -> Response:
            actual = parse_usage(usage)
            run = run_of(workflow_id)
            action = run.actions.get(action_id)
            if action is None or action.prediction is None:
                raise NotFound(f"no forecast action {action_id!r} in workflow {workflow_id!r}")
            if action.feedback_done:
                return self.json({"reason": f"feedback for {action_id!r} was already "
                                            "recorded"}, status=409)
            effects = shadows.feedback(run, action, actual)
            await (await service.publish(effects))
            [result] = effects.feedback
            return self.json({"workflow_id": workflow_id, "action_id": action_id,
                              "predicted": result.predicted, "actual": result.actual,
                              "deviation": round(result.deviation, 6),
                              "underprovisioned": result.underprovisioned,
                              "alerts": [a.message for a in effects.alerts]})
