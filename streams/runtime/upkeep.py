"""What every stateful service of a worker registers besides its agents: a timer, and the
hand-over of the partitions it no longer owns."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

import faust

from streams.runtime.restore import PartitionRestorer

log = logging.getLogger(__name__)


class Stateful(Protocol):
    """A service holding per-partition state (the mirrors, the shadows)."""

    restorer: PartitionRestorer

    async def tick(self) -> None:
        """Timer work, once a second."""
        ...

    async def forget_partitions(self, partitions: Iterable[int]) -> None:
        """The worker no longer owns these partitions of the history topic (Faust waits for
        this before the group rebalances on)."""
        ...


def register_upkeep(app: faust.App, service: Stateful, *, history: faust.TopicT,
                    name: str) -> None:
    """Run ``service.tick`` every second (a failure is logged, and it runs again: one bad run's
    state must not stop the timer for every other run), hand revoked partitions over, and let
    assigned ones be restored."""

    async def tick() -> None:
        try:
            await service.tick()
        except Exception:
            log.exception("%s timer work failed; it runs again in a second", name)

    tick.__name__ = tick.__qualname__ = f"{name}_timer"  # Faust names timers by function
    app.timer(interval=1.0)(tick)

    def assignment() -> set[int] | None:
        if app.rebalancing:
            return None
        topic = history.get_topic_name()
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}

    service.restorer.assignment = assignment

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: faust.App, assigned: set, **_: object) -> None:
        topic = history.get_topic_name()
        service.restorer.assign(tp.partition for tp in assigned if tp.topic == topic)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set, **_: object) -> None:
        topic = history.get_topic_name()
        await service.forget_partitions(tp.partition for tp in revoked if tp.topic == topic)
