"""`shadowflow replay` against the real broker: what it publishes matches its faults file."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.records import StateSnapshot, history_events
from streams.mirror.definitions import DEFAULT
from streams.mirror.run import rebuild
from streams.runtime.kafka import read_topic
from tests.support import TRACES, settings_env
from topology import topics
from topology.settings import Settings

SMALL = sorted((TRACES / "makeflow" / "blast").glob("blast-chameleon-small-00[12].json"))
pytestmark = pytest.mark.skipif(not SMALL, reason=f"shared traces not found at {TRACES}")


def test_replayed_streams_match_the_faults_file(settings: Settings, tmp_path: Path) -> None:
    seed = random.randrange(10**6)
    faults_file = tmp_path / "faults.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "topology.cli", "replay", *map(str, SMALL), "--workflows", "4",
         "--seed", str(seed), "--faults-per-workflow", "2", "--duplicates", "3",
         "--reorder", "3", "--faults-out", str(faults_file)],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert "replayed 4 workflows of 2 traces" in result.stdout
    faults = [json.loads(line) for line in faults_file.read_text().splitlines()]
    assert len(faults) == 8 and {f["workflow_id"] for f in faults} == {
        f"replay-{seed}-{i:04d}-{SMALL[i % 2].stem}" for i in range(4)}

    prefix = f"replay-{seed}-"
    history: dict[str, dict[int, object]] = {}
    for decoded in read_topic(settings, topics.HISTORY, skip_undecodable=True):
        if decoded.type_name in ("HistoryEvent", "HistoryEnvelope"):
            for event in history_events(decoded):
                if event.workflow_id.startswith(prefix):
                    history.setdefault(event.workflow_id, {})[event.sequence] = event
    snapshots = {(s.workflow_id, s.sequence): s for s in (
        StateSnapshot.from_avro(d.record) for d in read_topic(settings, topics.STATE)
        if d.type_name == "StateSnapshot") if s.workflow_id.startswith(prefix)}
    assert len(history) == 4

    for fault in faults:
        events = history[fault["workflow_id"]]
        if fault["kind"] == "dropped_event":
            assert fault["sequence"] not in events, fault
            continue
        # The primary's snapshot at (or, for a side effect, after) the fault disagrees with
        # the state the published history leads to.
        at = min(seq for (wf, seq) in snapshots
                 if wf == fault["workflow_id"] and seq >= fault["sequence"])
        published = [e for s, e in sorted(events.items()) if s <= at]
        mirror = rebuild(published, DEFAULT)
        assert snapshots[(fault["workflow_id"], at)].variables != mirror.state_at(at), fault
    dropped = {(f["workflow_id"], f["sequence"]) for f in faults
               if f["kind"] == "dropped_event"}
    for workflow_id, events in history.items():
        expected = set(range(1, max(events) + 1)) - {s for w, s in dropped if w == workflow_id}
        assert set(events) == expected, workflow_id
