"""The registry of mirrors: finished runs are evicted at a cost linear in how many go, restored
finished runs included."""

from __future__ import annotations

from schemas.records import EventKind, HistoryEvent, StateSnapshot
from streams.mirror.changelog import record_key, restore_all, snapshot_record
from streams.mirror.registry import Mirrors
from tests.support import steps_of

RETENTION = 60_000


def _run(mirrors: Mirrors, run: str, finished_at: int | None) -> None:
    """A short run; finished (seen at ``finished_at``) unless that is ``None``."""
    kinds = [EventKind.WORKFLOW_STARTED, EventKind.ACTION_SCHEDULED]
    if finished_at is not None:
        kinds.append(EventKind.WORKFLOW_COMPLETED)
    for seq, kind in enumerate(kinds, 1):
        mirrors.offer(HistoryEvent("wf-" + run, run, "t", seq, kind, 0, action_id="a"), 0,
                      finished_at or 0)


def _evict_cost(finished: int, active: int) -> int:
    mirrors = Mirrors()
    for n in range(active):
        _run(mirrors, f"a{n}", None)
    for n in range(finished):
        _run(mirrors, f"f{n}", 1_000)
    steps = steps_of(lambda: mirrors.evict_finished(1_000 + RETENTION + 1, RETENTION))
    assert len(mirrors.runs) == active
    return steps


def test_evicting_finished_runs_costs_time_linear_in_how_many_go() -> None:
    small, large = _evict_cost(1_000, 0), _evict_cost(10_000, 0)
    assert large <= 11 * small, (small, large)
    # Runs still active, or finished but not yet due, cost nothing at all.
    assert _evict_cost(1_000, 10_000) == small
    mirrors = Mirrors()
    for n in range(5_000):
        _run(mirrors, f"f{n}", 1_000)
    assert steps_of(lambda: mirrors.evict_finished(1_000 + RETENTION, RETENTION)) < 20


def test_a_finished_run_waited_on_by_a_snapshot_is_kept_until_it_is_compared() -> None:
    mirrors = Mirrors()
    _run(mirrors, "r", 1_000)
    mirrors.await_comparison(StateSnapshot("wf-r", "r", 9, 0, {}), 1_000, "token")
    assert not mirrors.evict_finished(1_000 + RETENTION + 1, RETENTION)
    mirrors.waiting.clear()
    assert list(mirrors.evict_finished(1_000 + RETENTION + 2, RETENTION)) == [("wf-r", "r")]


def test_restored_finished_runs_are_evicted_a_retention_after_their_restore() -> None:
    before = Mirrors()
    _run(before, "done", 1_000)
    _run(before, "going", None)
    log = [(record_key(*key, "SNAPSHOT"), snapshot_record(mirror))
           for key, mirror in before.runs.items()]
    after = Mirrors()
    after.load(restore_all(log), partition=0, now_ms=50_000)
    assert not after.evict_finished(50_000 + RETENTION, RETENTION)
    assert list(after.evict_finished(50_000 + RETENTION + 1, RETENTION)) == [("wf-done", "done")]
    assert set(after.runs) == {("wf-going", "going")}
