"""Sizing follows what is known on a running worker: an action is sized again when it starts
(an ADJUST when the amount changed) and a retry gets a reservation of its own with double the
memory. Real broker, real ClickHouse, a real worker process."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from schemas.records import EventKind, HistoryEvent
from streams.runtime.kafka import Publisher, read_topic
from tests.support import WorkerProcess, wait_for
from topology import topics
from topology.settings import Settings

GB = 10**9


def _history(workflow_id: str, workflow_type: str, action_type: str,
             steps: list[tuple[EventKind, str, int, float | None]]) -> list[HistoryEvent]:
    events = [HistoryEvent(workflow_id, "run", workflow_type, 1, EventKind.WORKFLOW_STARTED,
                           1_000)]
    for kind, action, attempt, usage in steps:
        attributes = {} if usage is None else {"usage.memory_bytes": usage}
        events.append(HistoryEvent(workflow_id, "run", workflow_type, len(events) + 1, kind,
                                   1_000 * (len(events) + 1), action_id=action,
                                   action_type=action_type, attempt=attempt,
                                   attributes=attributes))
    return events


def _commands(settings: Settings, workflow_id: str, action_id: str,
              count: int) -> list[dict]:
    """The reservation commands of one action, once there are ``count`` of them."""
    return wait_for(lambda: len(found := [
        d.record for d in read_topic(settings, topics.RESERVATIONS)
        if d.record["workflow_id"] == workflow_id and d.record["action_id"] == action_id
    ]) >= count and found, what=f"{count} commands of {action_id}")


def test_start_adjusts_and_a_retry_doubles(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker_factory().start()
    tag = uuid.uuid4().hex[:6]
    workflow_type, action_type = f"resize-{tag}", f"step-{tag}"
    S, B, C, F = (EventKind.ACTION_SCHEDULED, EventKind.ACTION_STARTED,
                  EventKind.ACTION_COMPLETED, EventKind.ACTION_FAILED)
    learn = [step for n in range(4) for step in ((S, f"a{n}", 1, None), (B, f"a{n}", 1, None),
                                                (C, f"a{n}", 1, 1.0 * GB))]
    first = f"resize-{tag}-1"
    publisher = Publisher(settings)
    publisher.send_history(_history(first, workflow_type, action_type, learn))
    publisher.flush()
    _commands(settings, first, "a3", 2)  # reserved and released: the type is learned

    second = f"resize-{tag}-2"
    publisher.send_history(_history(second, workflow_type, action_type, [
        (S, "late", 1, None),                      # sized from four 1 GB peaks
        (S, "big", 1, None), (B, "big", 1, None), (C, "big", 1, 8.0 * GB),
        (B, "late", 1, None),                      # sized again: the 8 GB peak counts now
        (F, "late", 1, None),
        (S, "late", 2, None),                      # the retry
    ]))
    publisher.flush()
    late = _commands(settings, second, "late", 4)
    ops = [c["op"] for c in late]
    # Reserved when scheduled (or a placeholder made at the run's start claimed, named after it
    # from then on), adjusted when it started, released when it failed, the retry reserved.
    assert ops in (["RESERVE", "ADJUST", "RELEASE", "RESERVE"],
                   ["ADJUST", "ADJUST", "RELEASE", "RESERVE"]), ops
    reserved, adjusted, _, retry = (c["resources"]["memory_bytes"] for c in late)
    assert adjusted > reserved
    assert late[0]["reservation_id"] == late[1]["reservation_id"] != late[3]["reservation_id"]
    assert retry == 2 * adjusted
    assert len({c["command_id"] for c in late}) == len(late)
