"""The shadow workflows' seed HTTP routes (Faust web views): create, prediction, feedback.

Errors are JSON ``{"reason": ...}`` with a 4xx status; see the README for every route.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import faust
from faust.web import Request, Response, View

from streams.runtime.clock import now_ms
from streams.runtime.forwarding import Forwarding
from streams.runtime.http import BadRequest, NotFound, json_body, json_errors
from streams.runtime.validation import check_amount
from streams.shadow.agents import ShadowService
from streams.shadow.workflows import RunShadow

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}
_USAGE_KEYS = {"cpu": "cpu_cores", "cpu_cores": "cpu_cores", "memory": "memory_bytes",
               "mem": "memory_bytes", "memory_bytes": "memory_bytes", "network": "network_bytes",
               "net": "network_bytes", "network_bytes": "network_bytes", "cost": "cost"}
_USAGE_VALUE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)$")


def parse_usage(text: str) -> dict[str, float]:
    """``cpu=1.5,memory=2GiB,network=300MB,cost=0.12`` -> amounts by resource class.

    CPU in cores; memory and network in bytes, with an optional unit (B, KB/MB/GB/TB decimal,
    KiB/MiB/GiB/TiB binary); cost as a plain number. Each amount must be finite, non-negative
    and within its documented bound (``streams.runtime.validation``). ``BadRequest`` names the
    bad part."""
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
        amount = float(match.group(1)) * _UNITS[unit]
        wrong = check_amount(key, amount)
        if wrong is not None:
            raise BadRequest(f"{name.strip()}: {wrong.reason}")
        usage[key] = amount
    if not {"memory_bytes", "cpu_cores"} & usage.keys():
        raise BadRequest("give at least memory or cpu")
    return usage


def register_shadow_routes(app: faust.App, service: ShadowService, *,
                           forwarding: Forwarding) -> None:
    """Add the seed routes of the shadow workflows: create, prediction, feedback; each is
    served by the worker owning the workflow (``forwarding``)."""
    shadows = service.shadows

    async def restored(workflow_id: str) -> int:
        # A partition just taken over answers as its old owner would: restore it first.
        return await forwarding.restored(workflow_id, service.restorer.ensure)

    async def run_of(workflow_id: str) -> RunShadow:
        await restored(workflow_id)
        run = shadows.shadow_of(workflow_id)
        if run is None:
            raise NotFound(f"no shadow of workflow {workflow_id!r} on this worker (never "
                           "created, or finished and evicted)")
        return run

    @app.page("/shadow/create/{workflow_id}")
    class Create(View):
        """POST [{"run_id": ..., "workflow_type": ...}]: make the workflow's shadow (idempotent:
        an existing one is left as it is)."""

        @forwarding.route("workflow_id")
        @json_errors
        async def post(self, request: Request, workflow_id: str) -> Response:
            body = await json_body(request) or {}
            if not isinstance(body, Mapping):
                raise BadRequest("body, when given, must be a JSON object")
            run_id = body.get("run_id", workflow_id)
            workflow_type = body.get("workflow_type", "unknown")
            if not isinstance(run_id, str) or not isinstance(workflow_type, str):
                raise BadRequest("run_id and workflow_type must be strings")
            partition = await restored(workflow_id)
            existed = (workflow_id, run_id) in shadows.runs
            effects = shadows.create(workflow_id, run_id, workflow_type, now_ms(),
                                     partition=partition)
            await (await service.settle(effects))
            return self.json({"workflow_id": workflow_id, "run_id": run_id,
                              "workflow_type": workflow_type, "created": not existed},
                             status=200 if existed else 201)

    @app.page("/shadow/{workflow_id}/prediction/{action_id}")
    class PredictionView(View):
        """GET: the forecast, confidence and source for a scheduled action, or for a likely next
        action (``next:<action type>``)."""

        @forwarding.route("workflow_id")
        @json_errors
        async def get(self, request: Request, workflow_id: str, action_id: str) -> Response:
            run = await run_of(workflow_id)
            action = run.actions.get(action_id)
            prediction = action.prediction if action else None
            if prediction is None and action_id.startswith("next:"):
                prediction = run.likely.get(action_id.removeprefix("next:"))
            if prediction is None and action_id in run.sealed:
                raise NotFound(f"action {action_id!r} of {workflow_id!r} finished and was "
                               "sealed with the run's finished actions: its prediction is in "
                               "the predictions table")
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

        @forwarding.route("workflow_id")
        @json_errors
        async def put(self, request: Request, workflow_id: str, action_id: str,
                      usage: str) -> Response:
            actual = parse_usage(usage)
            run = await run_of(workflow_id)
            action = run.actions.get(action_id)
            if action_id in run.sealed or (action is not None and action.feedback_done):
                return self.json({"reason": f"feedback for {action_id!r} was already "
                                            "recorded"}, status=409)
            if action is None or action.prediction is None:
                raise NotFound(f"no forecast action {action_id!r} in workflow {workflow_id!r}")
            effects = shadows.feedback(run, action, actual)
            await (await service.settle(effects))
            [result] = effects.feedback
            return self.json({"workflow_id": workflow_id, "action_id": action_id,
                              "predicted": result.predicted, "actual": result.actual,
                              "deviation": round(result.deviation, 6),
                              "underprovisioned": result.underprovisioned,
                              "alerts": [a.message for a in effects.alerts]})
