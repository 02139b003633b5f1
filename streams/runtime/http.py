"""What every HTTP route shares: JSON errors with a reason and a 4xx status, JSON bodies.

Requests about a workflow are routed to the worker that owns its partition
(``streams.runtime.forwarding``), which is why producers must partition by Kafka's default
(murmur2) hash of the workflow id.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.web import Request, Response, View

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """The request cannot be served as sent; the message is the reason given to the client."""


class NotFound(LookupError):
    """The thing asked about is not here; the message is the reason given to the client."""


class RetryLater(RuntimeError):
    """The thing asked about is moving between workers; the message is the reason given to the
    client, with ``Retry-After``."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


Handler = Callable[..., Awaitable[Response]]


def json_errors(handler: Handler) -> Handler:
    """Turn ``BadRequest`` into 400, ``NotFound`` into 404, ``RetryLater`` into 503 with
    ``Retry-After`` and anything else into a logged 500, each with a JSON body
    ``{"reason": ...}``."""

    @functools.wraps(handler)
    async def wrapped(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(view, request, *args, **kwargs)
        except BadRequest as exc:
            return view.json({"reason": str(exc)}, status=400)
        except NotFound as exc:
            return view.json({"reason": str(exc)}, status=404)
        except RetryLater as exc:
            return view.json({"reason": str(exc)}, status=503,
                             headers={"Retry-After": str(exc.retry_after)})
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            return view.json({"reason": f"internal error: {exc!r}"}, status=500)

    return wrapped


async def json_body(request: Request) -> Any:
    """The request's JSON body (None when empty); ``BadRequest`` when it is not JSON."""
    try:
        return json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
