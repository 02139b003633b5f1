"""Snapshots plus deltas restore the live state, and deltas stay small."""

from __future__ import annotations

from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent
from streams.mirror.changelog import (
    DELTA,
    MAX_RECORD_BYTES,
    SNAPSHOT,
    changelog_keys,
    delta_record,
    next_record,
    next_records,
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


def _promote(snapshot: dict, tail: list[HistoryEvent]) -> RunMirror:
    """What a new primary rebuilds from the last snapshot and promotion's tail."""
    mirror = restore(snapshot)
    for event in tail:
        mirror.offer(event, DEFAULT)
    return mirror


def test_the_tail_since_the_snapshot_stays_bounded_and_promotion_stays_exact() -> None:
    # 100k updates of one variable, in batches of 500 with a record after each, as the agent
    # does: the delta stays one variable, yet a snapshot is taken once the tail is due.
    live = RunMirror("wf", "r", "t")
    limits = live.limits
    longest = 0
    snapshot = next_record(live)
    for start in range(1, 100_001, 500):
        for e in _updates(start, ["x"] * 500, 0.0):
            live.offer(e, DEFAULT)
        longest = max(longest, len(live.since_snapshot))
        record = next_record(live)
        if record["kind"] == SNAPSHOT:
            snapshot = record
    assert longest < limits.tail_due(1) + 500  # at most one batch past the bound
    assert _promote(snapshot, live.since_snapshot).variables == live.variables
    assert [e.sequence for e in live.since_snapshot] == list(
        range(live.snapshot_sequence + 1, live.sequence + 1))


def test_one_batch_past_the_tail_bound_drops_the_tail_until_the_next_snapshot() -> None:
    live = RunMirror("wf", "r", "t")
    next_record(live)
    for e in _updates(1, ["x"] * 30_000, 1.0):
        live.offer(e, DEFAULT)
    assert live.since_snapshot == [] and not live.tail_complete  # the state alone is exact
    assert live.variables == {"x": 1.0} and live.sequence == 30_000
    record = next_record(live)
    assert record["kind"] == SNAPSHOT and live.tail_complete
    for e in _updates(30_001, ["y"], 2.0):
        live.offer(e, DEFAULT)
    assert _promote(record, live.since_snapshot).variables == live.variables


def test_a_mirror_restored_from_a_delta_takes_a_snapshot_next() -> None:
    live = RunMirror("wf", "r", "t")
    for e in _updates(1, [f"v{i}" for i in range(100)], 1.0):
        live.offer(e, DEFAULT)
    snapshot = next_record(live)
    live.offer(_updates(101, ["v0"], 2.0)[0], DEFAULT)
    delta = next_record(live)
    assert delta["kind"] == DELTA
    restored = restore(snapshot, delta)
    assert not restored.tail_complete and next_record(restored)["kind"] == SNAPSHOT


def _big_run(actions: int) -> RunMirror:
    """A run of ``actions`` actions, each scheduled, started and completed with a result."""
    live = RunMirror("wf", "r", "t")
    seq = 1
    live.offer(HistoryEvent("wf", "r", "t", seq, EventKind.WORKFLOW_STARTED, 0), DEFAULT)
    for n in range(actions):
        for kind in (EventKind.ACTION_SCHEDULED, EventKind.ACTION_STARTED,
                     EventKind.ACTION_COMPLETED):
            seq += 1
            values = {"output": f"s3://bucket/run/{n:06d}/out"} if kind is \
                EventKind.ACTION_COMPLETED else {}
            live.offer(HistoryEvent("wf", "r", "t", seq, kind, 0, action_id=f"task_{n:06d}",
                                    action_type="step", values=values), DEFAULT)
    return live


def test_a_state_over_the_producers_limit_is_split_and_restored_whole() -> None:
    live = _big_run(15_000)
    whole = CODEC.encode("MirrorRecord", snapshot_record(live))
    assert len(whole) > 2**20  # over the producer's default limit of 1 MiB: it used to raise
    pairs = next_records(live)
    assert len(pairs) >= 3 and pairs[-1][0] == record_key("wf", "r", SNAPSHOT)
    encoded = [(key, CODEC.encode("MirrorRecord", record)) for key, record in pairs]
    assert max(len(value) for _, value in encoded) <= MAX_RECORD_BYTES
    log: list[tuple[bytes, dict | None]] = [(k, CODEC.decode(v).record) for k, v in encoded]
    restored = restore_all(log)[("wf", "r")]
    assert restored.variables == live.variables and restored.sequence == live.sequence
    assert restored.snapshot_parts == sorted(live.snapshot_parts)

    # A later snapshot supersedes the parts: they are tombstoned after its head.
    for n in range(15_000):
        live.offer(HistoryEvent("wf", "r", "t", live.sequence + 1, EventKind.STATE_UPDATED, 0,
                                values={f"task_{n:06d}.note": "x"}), DEFAULT)
    later = next_records(live)
    tombstones = [key for key, record in later if record is None]
    assert set(tombstones) == {key for key, _ in pairs[:-1]}
    log += [(k, None if r is None else CODEC.decode(CODEC.encode("MirrorRecord", r)).record)
            for k, r in later]
    again = restore_all(log)[("wf", "r")]
    assert again.variables == live.variables
    assert set(changelog_keys(live)) >= {key for key, r in later if r is not None}


def test_a_split_snapshot_missing_a_part_is_not_restored_from_a_wrong_state() -> None:
    live = _big_run(15_000)
    pairs = next_records(live)
    log = [(k, r) for k, r in pairs if k != pairs[0][0]]
    assert restore_all(log) == {}
