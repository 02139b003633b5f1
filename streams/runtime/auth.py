"""Bearer-token authentication of the HTTP API.

With a token set (``SHADOWFLOW_API_TOKEN`` or a token file) every route but ``OPEN_PATHS``
requires ``Authorization: Bearer <token>``; anything else is answered 401 with a JSON reason and
``WWW-Authenticate``. Workers forward a request with its headers, so the token reaches the
owning worker, which checks it again (every worker of a group has the same token).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/metrics", "/healthz"})
"""Served without the token: Prometheus and health checkers hold none, and neither route tells
anything about a workflow."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def refusal(authorization: str | None, token: str) -> str | None:
    """Why a request with this ``Authorization`` header is refused, or ``None`` when it carries
    the token. Compared in constant time."""
    if not authorization:
        return "this API needs a token: send Authorization: Bearer <token>"
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "expected Authorization: Bearer <token>"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "wrong token"
    return None


def bearer_middleware(token: str) -> Middleware:
    """An aiohttp middleware requiring ``token`` on every route but ``OPEN_PATHS``."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            reason = refusal(request.headers.get("Authorization"), token)
            if reason is not None:
                log.info("refused %s %s from %s: %s", request.method, request.path,
                         request.remote, reason)
                return web.json_response({"reason": reason}, status=401,
                                         headers={"WWW-Authenticate": 'Bearer realm="shadowflow"'})
        return await handler(request)

    return check
