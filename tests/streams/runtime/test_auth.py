"""The API token: who is let through, and what the others are told."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from streams.runtime.auth import bearer_middleware, refusal


@pytest.mark.parametrize(("header", "reason"), [
    (None, "needs a token"), ("", "needs a token"), ("Basic dXNlcjpwYXNz", "expected"),
    ("Bearer", "expected"), ("Bearer  ", "expected"), ("Bearer wrong", "wrong token"),
    ("Bearer s3cret-but-longer", "wrong token"), ("Bearer s3cret", None),
    ("bearer s3cret", None), ("Bearer  s3cret ", None),
])
def test_refusal(header: str | None, reason: str | None) -> None:
    got = refusal(header, "s3cret")
    assert (got is None) if reason is None else (got is not None and reason in got)


async def _exchanges() -> list[tuple[str, int, dict[str, str], object]]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[bearer_middleware("s3cret")])
    for path in ("/shadow/w/state", "/metrics", "/healthz", "/openapi.json"):
        app.router.add_get(path, ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    answers = []
    try:
        async with aiohttp.ClientSession() as session:
            for path, headers in (("/shadow/w/state", {}),
                                  ("/shadow/w/state", {"Authorization": "Bearer nope"}),
                                  ("/shadow/w/state", {"Authorization": "Bearer s3cret"}),
                                  ("/openapi.json", {}), ("/metrics", {}), ("/healthz", {})):
                async with session.get(f"http://127.0.0.1:{port}{path}",
                                       headers=headers) as answer:
                    answers.append((path, answer.status, dict(answer.headers),
                                    await answer.json()))
    finally:
        await runner.cleanup()
    return answers


def test_every_route_but_metrics_and_health_needs_the_token() -> None:
    answers = asyncio.run(_exchanges())
    statuses = [(path, status) for path, status, _, _ in answers]
    assert statuses == [("/shadow/w/state", 401), ("/shadow/w/state", 401),
                        ("/shadow/w/state", 200), ("/openapi.json", 401), ("/metrics", 200),
                        ("/healthz", 200)]
    for _, status, headers, body in answers:
        if status == 401:
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert isinstance(body, dict) and body["reason"]
