"""The mirror engine: deterministic, order- and duplicate-insensitive, gaps declared."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent
from streams.mirror.changelog import snapshot_record
from streams.mirror.definitions import DEFAULT, parse_definition
from streams.mirror.run import Gap, MirrorLimits, RunMirror, rebuild

CODEC = default_codec()


def _run(length: int = 60, workflow_id: str = "wf") -> list[HistoryEvent]:
    kinds = [EventKind.ACTION_SCHEDULED, EventKind.ACTION_STARTED, EventKind.ACTION_COMPLETED,
             EventKind.STATE_UPDATED]
    events = [HistoryEvent(workflow_id, "r1", "demo", 1, EventKind.WORKFLOW_STARTED, 1000)]
    for seq in range(2, length + 1):
        kind = kinds[seq % 4]
        events.append(HistoryEvent(
            workflow_id, "r1", "demo", seq, kind, 1000 + seq * 100, action_id=f"a{seq // 4}",
            action_type="step", values={"out": seq * 0.1, "n": seq} if kind in (
                EventKind.ACTION_COMPLETED, EventKind.STATE_UPDATED) else {}))
    return events


def _serialized(mirror: RunMirror) -> bytes:
    return CODEC.encode("MirrorRecord", snapshot_record(mirror))


def test_replaying_the_same_history_twice_gives_identical_serialized_state() -> None:
    events = _run(200)
    assert _serialized(rebuild(events, DEFAULT)) == _serialized(rebuild(events, DEFAULT))


@settings(max_examples=150, deadline=None)
@given(st.integers(5, 120), st.integers(0, 2**32 - 1), st.integers(0, 20), st.integers(0, 8))
def test_duplicates_and_bounded_reordering_give_the_ordered_state(
        length: int, seed: int, duplicates: int, distance: int) -> None:
    events = _run(length)
    rng = random.Random(seed)
    # Bounded reordering: each event lands within `distance` places of its ordered position.
    delivered = sorted(events + [rng.choice(events) for _ in range(duplicates)],
                       key=lambda e: e.sequence + rng.uniform(-distance, distance))
    ordered = rebuild(events, DEFAULT)
    shuffled = rebuild(delivered, DEFAULT)
    # Bit for bit the same state; only the duplicate counter tells the deliveries apart.
    shuffled.duplicates = 0
    assert _serialized(shuffled) == _serialized(ordered)
    assert shuffled.sequence == ordered.sequence == length
    assert rebuild(delivered, DEFAULT).duplicates == duplicates
    assert not shuffled.pending and not shuffled.gaps


def test_a_gap_behind_a_full_reorder_window_is_declared_and_skipped() -> None:
    events = _run(40)
    lost = events[:9] + events[10:]  # sequence 10 never arrives
    mirror = RunMirror("wf", "r1", "demo", MirrorLimits(reorder_window=5))
    declared = [gap for e in lost for gap in mirror.offer(e, DEFAULT)]
    assert declared == [Gap(10, 10)]  # when the sixth event is held behind it
    assert mirror.sequence == 40 and not mirror.pending


def test_a_gap_at_the_end_is_declared_by_the_timer() -> None:
    events = _run(20)
    mirror = RunMirror("wf", "r1", "demo", MirrorLimits(gap_timeout_ms=5_000))
    for e in events[:14] + events[15:17]:
        mirror.offer(e, DEFAULT, now_ms=100_000)
    assert mirror.sequence == 14 and sorted(mirror.pending) == [16, 17]
    assert mirror.expire(104_000, DEFAULT) == []
    assert mirror.expire(106_000, DEFAULT) == [Gap(15, 15)]
    assert mirror.sequence == 17


def test_state_at_an_earlier_sequence_equals_replaying_that_prefix() -> None:
    events = _run(80)
    mirror = rebuild(events, DEFAULT)
    assert mirror.state_at(0) == {}
    for n in (1, 17, 40, 79, 80):
        assert mirror.state_at(n) == rebuild(events[:n], DEFAULT).variables
    assert mirror.state_at(81) is None


def test_state_at_reaches_back_at_least_the_undo_depth_and_never_answers_beyond_its_log() -> None:
    events = _run(300)
    mirror = rebuild(events, DEFAULT, MirrorLimits(undo_depth=40))
    for n in range(300 - 40, 301):
        assert mirror.state_at(n) == rebuild(events[:n], DEFAULT).variables
    # Trimmed in batches: at most a quarter of the depth more is kept, never a wrong answer.
    for n in range(0, 300 - 40 - 10 - 1):
        assert mirror.state_at(n) is None
    for n in range(300 - 40 - 10 - 1, 300 - 40):
        assert mirror.state_at(n) in (None, rebuild(events[:n], DEFAULT).variables)


def test_results_map_to_variables_by_definition() -> None:
    definition = parse_definition({"workflow_type": "demo", "results": {
        "step": {"out": {"variable": "total_out", "mode": "add"}, "n": "last_n"}}})
    mirror = rebuild(_run(12), definition)
    # Completions are at sequences 2, 6 and 10, with out = sequence / 10.
    assert mirror.variables["total_out"] == 0.2 + 0.6 + 1.0
    assert mirror.variables["last_n"] == 10
    default = rebuild(_run(12), DEFAULT)
    assert default.variables["result.a0.out"] == 0.2
    assert default.variables["wf.actions.completed"] == 3


def test_fork_leaves_the_mirror_untouched() -> None:
    events = _run(30)
    mirror = rebuild(events[:20], DEFAULT)
    before = _serialized(mirror)
    fork = mirror.fork()
    for e in events[20:]:
        fork.offer(e, DEFAULT)
    assert fork.sequence == 30 and _serialized(mirror) == before
