"""Learning is shared: actions on one worker's partitions size the other worker's, and a
restarted worker relearns from shadow.outcomes (ClickHouse is not read for it). Real broker,
ClickHouse and two worker processes."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

from sinks.clickhouse import connect
from streams.runtime.forwarding import partition_of
from streams.runtime.kafka import Publisher
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import TRACES, WorkerProcess, http, one_per_partition, owners, wait_for
from topology.settings import Settings

TRACE = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"


def _publish(settings: Settings, workflow_id: str, tag: str) -> None:
    trace = load_wfformat(TRACE)
    events = [dataclasses.replace(e, workflow_type=f"shared-{tag}",
                                  action_type=e.action_type and f"{e.action_type}-{tag}")
              for e in history_from_trace(trace, workflow_id, "run", 1_700_000_000_000)]
    publisher = Publisher(settings)
    publisher.send_history(events, per_message=50)
    publisher.flush()


def _sources(settings: Settings, workflow_id: str) -> dict[str, int]:
    return dict(connect(settings).execute(
        "SELECT source, count() FROM predictions FINAL WHERE workflow_id = %(w)s "
        "AND predicted_next = 0 GROUP BY source", {"w": workflow_id}))


def _ids_on(partitions: set[int], count: int, prefix: str, total: int) -> list[str]:
    found = [f"{prefix}-{i}" for i in range(10_000)
             if partition_of(f"{prefix}-{i}", total) in partitions]
    return found[:count]


def test_a_model_learned_on_one_worker_sizes_the_others_and_survives_restarts(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    workers = [worker_factory().start() for _ in range(2)]
    bases = [f"http://127.0.0.1:{w.settings.web_port}" for w in workers]
    owner = wait_for(lambda: owners(bases, one_per_partition("probe", settings.partitions)),
                     timeout=90, what="both workers owning partitions")
    first = {p for p, base in owner.items() if base == bases[0]}
    second = set(owner) - first
    tag = uuid.uuid4().hex[:6]

    # Four runs on the first worker's partitions only: the second never sees their events.
    taught = _ids_on(first, 4, f"teach-{tag}", settings.partitions)
    for workflow_id in taught:
        _publish(settings, workflow_id, tag)
    wait_for(lambda: all(sum(_sources(settings, w).values()) == 43 for w in taught),
             what="the teaching runs sized")

    def learned(base: str, candidates: list[str]) -> bool:
        # A new shadow made through the API learns nothing itself: a placeholder sized from
        # what was learned can only come from what the teaching runs taught.
        if not candidates:
            return False
        workflow_id = candidates.pop(0)
        status, _ = http("POST", f"{base}/shadow/create/{workflow_id}",
                         {"workflow_type": f"shared-{tag}"})
        status, body = http("GET", f"{base}/shadow/{workflow_id}/prediction/"
                                   f"next:split_fasta-{tag}")
        return status == 200 and body["source"] != "MANUAL"

    on_second = _ids_on(second, 40, f"learn-{tag}", settings.partitions)
    wait_for(lambda: learned(bases[1], on_second), timeout=60,
             what="the second worker sizing from what the first learned")

    for worker in workers:
        worker.stop()
    restarted = worker_factory().start()
    fresh = _ids_on(set(owner), 1, f"again-{tag}", settings.partitions)
    assert learned(f"http://127.0.0.1:{restarted.settings.web_port}", fresh), (
        "a restarted worker relearns from shadow.outcomes")
    assert restarted.stop() == 0
