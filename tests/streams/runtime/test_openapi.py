"""The API document (``schemas/openapi.json``) matches the routes: it is valid OpenAPI 3, every
route a worker serves is in it and every path in it is served; ``assert_documented`` checks an
answer against it (used by the tests that call a running worker)."""

from __future__ import annotations

from typing import Any

import jsonschema
from openapi_spec_validator import validate

from streams.runtime.openapi import openapi_document
from topology.app import create_app
from topology.settings import Settings


def served_routes(settings: Settings) -> set[tuple[str, str]]:
    """(method, path template) of every route the worker's app serves (HEAD aside: aiohttp
    adds it beside each view)."""
    app = create_app(settings)
    return {(route.method.lower(), route.resource.canonical)
            for route in app.web.web_app.router.routes() if route.method != "HEAD"}


def documented_routes() -> set[tuple[str, str]]:
    """(method, path template) of every operation in the document."""
    return {(method, path) for path, item in openapi_document()["paths"].items()
            for method in item}


def assert_documented(method: str, path: str, status: int, body: Any,
                      content_type: str = "application/json") -> None:
    """Fail unless the document describes ``status`` for the route and ``body`` has the shape
    it gives."""
    document = openapi_document()
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented"
    content = responses[str(status)]["content"]
    assert content_type in content, f"{method} {path} {status}: {content_type} not documented"
    schema = {**content[content_type]["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document())


def test_every_route_is_documented_and_every_documented_route_served() -> None:
    served, documented = served_routes(Settings()), documented_routes()
    assert served - documented == set(), "routes missing from schemas/openapi.json"
    assert documented - served == set(), "documented routes no worker serves"


def test_the_shape_check_fails_on_an_undocumented_shape() -> None:
    assert_documented("GET", "/shadow/{workflow_id}/state", 404, {"reason": "none here"})
    for status, body in ((200, {"reason": "a state has no reason"}), (418, {"reason": "x"}),
                         (200, {"workflow_id": "w", "run_id": "r", "workflow_type": "t",
                                "sequence": "not a number", "variables": {}, "pending": [],
                                "duplicates": 0, "gaps": []})):
        try:
            assert_documented("GET", "/shadow/{workflow_id}/state", status, body)
        except (AssertionError, jsonschema.ValidationError):
            continue
        raise AssertionError(f"{status} {body} passed the check")
