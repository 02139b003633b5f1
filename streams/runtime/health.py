"""``GET /healthz``: is this worker up, does it hold partitions, can it reach its services.

Answers 200 when every probe succeeds, 503 otherwise, with each probe's result in the JSON body
(``{"status": "ok"|"degraded", "worker": ..., "partitions_assigned": n, "rebalancing": bool,
"checks": {"clickhouse": {"ok": true, "detail": ...}, "broker": {...}}}``). A worker that owns no
partition is healthy (a group may have more workers than partitions): the count is reported
for the operator to judge. Served without the API token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

Probe = Callable[[], str]
"""A blocking check of one service: returns a short detail (a version), raises when it fails."""

PROBE_TIMEOUT_SECONDS = 3.0


async def run_probe(probe: Probe, timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, Any]:
    """``{"ok": bool, "detail": str}`` of ``probe`` run in a thread, failed after ``timeout``."""
    try:
        detail = await asyncio.wait_for(asyncio.to_thread(probe), timeout)
    except TimeoutError:
        return {"ok": False, "detail": f"no answer within {timeout:g}s"}
    except Exception as exc:
        return {"ok": False, "detail": f"{exc.__class__.__name__}: {exc}"[:500]}
    return {"ok": True, "detail": detail}


def register_health_route(app: faust.App, probes: Mapping[str, Probe]) -> None:
    """Add ``GET /healthz`` to ``app``, checking each of ``probes`` (run side by side)."""

    @app.page("/healthz")
    class Health(View):
        """GET: the worker's health (see the module docstring)."""

        async def get(self, request: Request) -> Response:
            results = await asyncio.gather(*(run_probe(p) for p in probes.values()))
            checks = dict(zip(probes, results, strict=True))
            healthy = all(c["ok"] for c in checks.values())
            body = {"status": "ok" if healthy else "degraded",
                    "worker": str(app.conf.canonical_url).rstrip("/"),
                    "partitions_assigned": len(app.assignor.assigned_actives()),
                    "rebalancing": bool(app.rebalancing), "checks": checks}
            return self.json(body, status=200 if healthy else 503)
