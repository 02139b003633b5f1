"""``GET /openapi.json``: the API described (OpenAPI 3), kept in ``schemas/openapi.json``.

The document is tested against the routes: every route a worker serves is in it, every path in
it is served, and the answers of a running worker match the shapes it gives
(``tests/streams/runtime/test_openapi.py``).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import faust
from faust.web import Request, Response, View


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (read once)."""
    return json.loads(resources.files("schemas").joinpath("openapi.json").read_text())


def register_openapi_route(app: faust.App) -> None:
    """Add ``GET /openapi.json`` to ``app``."""

    @app.page("/openapi.json")
    class OpenApi(View):
        """GET: the OpenAPI 3 document of this API."""

        async def get(self, request: Request) -> Response:
            return self.json(openapi_document())
