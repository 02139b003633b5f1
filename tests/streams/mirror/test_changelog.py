"""Snapshots plus deltas restore the live state, and deltas stay small."""

from __future__ import annotations

from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent
from streams.mirror.changelog import (
    DELTA,
    SNAPSHOT,
    delta_record,
    next_record,
    record_key,
    restore,
    restore_all,
    snapshot_record,
)
from streams.mirror.definitions import DEFAULT
from streams.mirror.run import RunMirror

CODEC = default_codec()


def _updates(start: int, names: list[str], value: float) -> list[HistoryEvent]:
    return [HistoryEvent("wf", "r", "t", start + i, EventKind.STATE_UPDATED, start + i,
                         values={name: value}) for i, name in enumerate(names)]


def test_snapshot_plus_delta_restores_the_live_state() -> None:
    live = RunMirror("wf", "r", "t")
    log: list[tuple[bytes, dict | None]] = []
    seq = 1
    for batch in range(8):
        # First all 60 variables, then 6 at a time: deltas until they pass 25% of the state.
        names = [f"v{i}" for i in range(60)] if batch == 0 else [
            f"v{(batch * 7 + i) % 60}" for i in range(6)]
        events = _updates(seq, names, batch * 1.5)
        events.append(HistoryEvent("wf", "r", "t", seq + len(names) + 1,
                                   EventKind.STATE_UPDATED, 0, values={"held": batch}))
        for e in events:  # the last one is out of order: held across the record
            live.offer(e, DEFAULT)
        seq += len(names)
        record = next_record(live)
        # Through the codec, as on the topic.
        decoded = CODEC.decode(CODEC.encode("MirrorRecord", record)).record
        log.append((record_key("wf", "r", record["kind"]), decoded))
        restored = restore_all(log)[("wf", "r")]
        assert restored.variables == live.variables
        assert restored.sequence == live.sequence
        assert restored.pending == live.pending
        assert restored.duplicates == live.duplicates
    assert {r["kind"] for _, r in log} == {SNAPSHOT, DELTA}


def test_a_tombstone_removes_the_run() -> None:
    live = RunMirror("wf", "r", "t")
    for e in _updates(1, ["a", "b"], 1.0):
        live.offer(e, DEFAULT)
    log = [(record_key("wf", "r", SNAPSHOT), snapshot_record(live)),
           (record_key("wf", "r", SNAPSHOT), None)]
    assert restore_all(log) == {}


def test_a_delta_of_one_percent_of_the_variables_is_small() -> None:
    live = RunMirror("wf", "r", "t")
    for e in _updates(1, [f"variable.{i:04d}" for i in range(1000)], 1.0):
        live.offer(e, DEFAULT)
    snapshot = CODEC.encode("MirrorRecord", next_record(live))
    for e in _updates(1001, [f"variable.{i:04d}" for i in range(0, 1000, 100)], 2.0):
        live.offer(e, DEFAULT)
    delta = CODEC.encode("MirrorRecord", delta_record(live))
    assert len(delta) <= 0.10 * len(snapshot), (len(delta), len(snapshot))
    assert restore(CODEC.decode(snapshot).record,
                   CODEC.decode(delta).record).variables == live.variables
