"""The reservation stream a resource manager consumes, checked with the reference consumer
(`shadowflow reservations`): distinct commands have distinct ids, every reservation is released
exactly once, and what two workers hold together never exceeds the one capacity configured.
Real broker, ClickHouse and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest

from schemas.codec import default_codec
from sinks.clickhouse import connect
from streams.runtime.kafka import Publisher, read_partition, read_topic
from streams.shadow.changelog import FORMAT_SEALED
from streams.shadow.ledger import ReservationLedger
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import (
    TRACES,
    WorkerProcess,
    one_per_partition,
    owners,
    settings_env,
    wait_for,
)
from topology import topics
from topology.settings import Settings

RUNS = [TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json",
        TRACES / "makeflow" / "blast" / "blast-chameleon-small-002.json",
        TRACES / "pegasus" / "srasearch" / "srasearch-chameleon-10a-001.json",
        TRACES / "makeflow" / "blast" / "blast-chameleon-small-003.json"]
CAPACITY_GIB = 24.0


def _refusals(settings: Settings, workflows: set[str]) -> list[str]:
    return [d.record["message"] for d in read_topic(settings, topics.ANOMALIES,
                                                    skip_undecodable=True)
            if d.record["workflow_id"] in workflows and d.record["kind"] == "RESERVATION_FAILED"]


def _stored_commands(settings: Settings, tag: str) -> int:
    return connect(settings).execute(
        "SELECT count() FROM reservations FINAL WHERE workflow_id LIKE %(p)s",
        {"p": f"crash-{tag}-%"})[0][0]


def _commands(settings: Settings, workflows: set[str]) -> list[dict]:
    return [d.record for d in read_topic(settings, topics.RESERVATIONS, skip_undecodable=True)
            if d.type_name == "ReservationCommand" and d.record["workflow_id"] in workflows]


def test_two_workers_balance_the_stream_within_one_capacity(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    if not all(path.exists() for path in RUNS):
        pytest.skip("the shared traces are not beside the project")
    workers = [worker_factory(pool_memory_gib=CAPACITY_GIB, pool_cpu_cores=1000.0).start()
               for _ in range(2)]
    # Publish once the group settled with each worker owning partitions: shadows do not move
    # with a partition yet, so a rebalance in the middle of the runs would unbalance the ledger.
    bases = [f"http://127.0.0.1:{w.settings.web_port}" for w in workers]
    probes = one_per_partition("probe", settings.partitions)
    wait_for(lambda: owners(bases, probes), timeout=90, what="both workers owning partitions")
    tag = uuid.uuid4().hex[:6]
    publisher = Publisher(settings)
    workflows = set()
    for index, path in enumerate(RUNS * 2):  # the later runs reserve ahead what the first taught
        workflow_id = f"ledger-{tag}-{index}"
        workflows.add(workflow_id)
        publisher.send_history(history_from_trace(load_wfformat(path), workflow_id, "run",
                                                  1_700_000_000_000, slots=None))
    publisher.flush()

    def balanced() -> ReservationLedger | None:
        ledger = ReservationLedger().apply_all(_commands(settings, workflows))
        return ledger if ledger.reserved and ledger.balanced else None

    ledger = wait_for(balanced, timeout=120, what="every reservation released")
    commands = _commands(settings, workflows)
    by_id = defaultdict(list)
    for command in commands:
        by_id[command["command_id"]].append(command)
    assert all(len({json.dumps(c, sort_keys=True) for c in same}) == 1
               for same in by_id.values()), "one command id, two different commands"
    assert ledger.peaks["memory_bytes"] <= CAPACITY_GIB * 2**30
    assert any(c["action_id"].startswith("next:") for c in commands), "reserved ahead too"
    assert any("cannot hold" in c for c in _refusals(settings, workflows)), (
        "the capacity was reached, or the test proves nothing")
    for worker in workers:
        worker.stop()

    # The reference consumer, as an operator runs it.
    out = subprocess.run([sys.executable, "-m", "topology.cli", "reservations", "--json"],
                         env={**os.environ, **settings_env(settings)}, capture_output=True,
                         text=True, timeout=120)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["commands"] >= len(by_id) and figures["reserved"] >= ledger.reserved


def test_a_worker_killed_mid_stream_leaves_the_ledger_balanced(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    if not RUNS[0].exists():
        pytest.skip("the shared traces are not beside the project")
    tag = uuid.uuid4().hex[:6]
    trace = load_wfformat(RUNS[0])
    runs = {f"crash-{tag}-{i}": history_from_trace(trace, f"crash-{tag}-{i}", "run",
                                                   1_700_000_000_000 + i, slots=None)
            for i in range(8)}
    actions = {(w, e.action_id) for w, events in runs.items() for e in events if e.action_id}
    publisher = Publisher(settings)
    stop = threading.Event()

    def publish_slowly() -> None:  # several seconds, so the kill lands mid-stream
        for start in range(0, max(len(e) for e in runs.values()), 10):
            for events in runs.values():
                publisher.send_history(events[start:start + 10])
            publisher.flush()
            stop.wait(1.0)

    # Nothing refused; finished actions sealed in chunks of 3, so restores merge chunks.
    roomy = {"pool_memory_gib": 10_000.0, "pool_cpu_cores": 10_000.0, "shadow_seal_every": 3}
    first = worker_factory(**roomy).start()
    thread = threading.Thread(target=publish_slowly)
    thread.start()
    wait_for(lambda: _stored_commands(settings, tag) > 40, what="some commands stored")
    first.kill()
    at_kill = _stored_commands(settings, tag)
    worker_factory(**roomy).start(timeout=90)
    thread.join()

    def balanced() -> ReservationLedger | None:
        ledger = ReservationLedger().apply_all(_commands(settings, set(runs)))
        return ledger if ledger.balanced else None

    try:
        ledger = wait_for(balanced, timeout=120, what="every reservation released once")
    except AssertionError:
        ledger = ReservationLedger().apply_all(_commands(settings, set(runs)))
        held = sorted((h.workflow_id, h.action_id) for h in ledger.held.values())
        history = [(c["op"], c["action_id"], c.get("reason", ""))
                   for c in _commands(settings, set(runs))
                   if c["reservation_id"] in ledger.held]
        raise AssertionError(f"not balanced: problems {ledger.problems[:5]}, "
                             f"held {held[:5]} of {len(held)}: {history}") from None
    assert at_kill < len(ledger.held) + ledger.commands, "the kill must come mid-stream"
    reserved = {(h.workflow_id, h.action_id) for h in ledger.held.values()}
    assert not reserved and not ledger.problems
    commands = _commands(settings, set(runs))
    assert {(c["workflow_id"], c["action_id"]) for c in commands} >= actions
    # The records stayed small: finished actions went to sealed chunks, which restores merged.
    codec = default_codec()
    records = [codec.decode(value).record for p in range(settings.partitions)
               for _, value in read_partition(settings, topics.SHADOWS, p) if value is not None]
    sealed = [r for r in records if r["workflow_id"] in runs and r["format"] == FORMAT_SEALED]
    assert len(sealed) >= len(runs)
