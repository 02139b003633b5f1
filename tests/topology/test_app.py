"""The worker's Faust app wired in process, without services: which agent reads which topic and
which routes answer which methods."""

from __future__ import annotations

from topology import topics
from topology.app import create_app
from topology.settings import Settings


def test_agents_read_the_input_topics() -> None:
    app = create_app(Settings())
    assert {name: agent.channel.get_topic_name() for name, agent in app.agents.items()} == {
        "history-ingest": topics.HISTORY, "telemetry": topics.TELEMETRY, "compare": topics.STATE}


def test_every_route_is_registered_with_its_methods() -> None:
    app = create_app(Settings())
    routes = {(r.method, r.resource.canonical) for r in app.web.web_app.router.routes()
              if r.method != "HEAD"}
    assert routes == {
        ("POST", "/shadow/create/{workflow_id}"),
        ("GET", "/shadow/{workflow_id}/prediction/{action_id}"),
        ("PUT", "/shadow/{workflow_id}/feedback/{action_id}/{usage}"),
        ("GET", "/shadow/{workflow_id}/state"),
        ("POST", "/shadow/{workflow_id}/promote"),
        ("POST", "/shadow/{workflow_id}/what-if"),
        ("GET", "/shadow/definitions/{workflow_type}"),
        ("PUT", "/shadow/definitions/{workflow_type}"),
    }



def test_the_mirror_and_shadow_timers_and_the_feeds_are_scheduled() -> None:
    app = create_app(Settings())
    # Faust keeps timers and tasks as one list: the two timers and the feeds' start.
    assert len(app._app_tasks) == 3
