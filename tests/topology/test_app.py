"""The worker's Faust app wired in process, without services: which agent reads which topic and
which timers run (which routes answer is checked against the API document:
``tests/streams/runtime/test_openapi.py``)."""

from __future__ import annotations

from topology import topics
from topology.app import create_app
from topology.settings import Settings


def test_agents_read_the_input_topics() -> None:
    app = create_app(Settings())
    assert {name: agent.channel.get_topic_name() for name, agent in app.agents.items()} == {
        "history-ingest": topics.HISTORY, "telemetry": topics.TELEMETRY, "compare": topics.STATE}


def test_the_mirror_and_shadow_timers_and_the_feeds_are_scheduled() -> None:
    app = create_app(Settings())
    # Faust keeps timers and tasks as one list: the two timers and the feeds' start.
    assert len(app._app_tasks) == 3
