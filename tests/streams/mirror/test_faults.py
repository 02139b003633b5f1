"""Injected faults are caught, and clean streams of the shared traces raise nothing."""

from __future__ import annotations

import pytest

from schemas.records import HistoryEvent, StateSnapshot
from streams.mirror.definitions import DefinitionRegistry
from streams.mirror.registry import Finding, Mirrors
from streams.mirror.run import MirrorLimits
from streams.traces.faulty_primary import FaultPlan, PrimaryRun, simulate
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import TRACES

TRACE_FILES = sorted(TRACES.glob("*/*/*.json")) + sorted(TRACES.glob("nextflow/*.json"))


def _feed(run: PrimaryRun, mirrors: Mirrors | None = None) -> tuple[Mirrors, list[Finding]]:
    mirrors = mirrors or Mirrors(DefinitionRegistry(), MirrorLimits(gap_timeout_ms=5_000))
    findings: list[Finding] = []
    for event in run.history:
        findings += mirrors.offer(event, 0, now_ms=0)
    for i, snapshot in enumerate(run.snapshots):
        mirrors.await_comparison(snapshot, 0, i)
    found, done = mirrors.compare_ready()
    findings += found
    # End of stream: the timer declares what is still open.
    more, given_up = mirrors.expire(10**9)
    findings += more
    found, done2 = mirrors.compare_ready()
    findings += found
    assert sorted(done + given_up + done2) == list(range(len(run.snapshots)))
    return mirrors, findings


def _history(path, workflow_id: str = "wf") -> list[HistoryEvent]:
    return history_from_trace(load_wfformat(path), workflow_id, "r1", 1_700_000_000_000)


SMALL = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"
needs_traces = pytest.mark.skipif(not SMALL.exists(), reason=f"shared traces not at {TRACES}")


@needs_traces
@pytest.mark.parametrize("kind", ["corrupt_variable", "missing_variable", "dropped_event",
                                  "duplicated_side_effect"])
def test_each_injected_fault_is_caught_at_its_sequence(kind: str) -> None:
    run = simulate(_history(SMALL), DefinitionRegistry().get("blast"), FaultPlan([kind]),
                   snapshot_every=5, seed=3)
    [fault] = run.faults
    _, findings = _feed(run)
    assert findings, f"{kind} at {fault.sequence} went unnoticed"
    first = min(findings, key=lambda f: f.sequence)
    # Snapshot faults show at their snapshot; event faults by the next snapshot at the latest;
    # nothing is reported anywhere else.
    assert all(fault.sequence <= f.sequence <= fault.sequence + 5 for f in findings), findings
    if kind == "dropped_event":
        assert any(f.kind == "MISSING_EVENTS" and f.sequence == fault.sequence for f in findings)
    if kind == "missing_variable":
        assert first.variables[0].status == "MISSING_IN_PRIMARY"
        assert first.severity in ("HIGH", "CRITICAL")


@needs_traces
def test_a_persistent_deviation_is_reported_once_not_at_every_snapshot() -> None:
    run = simulate(_history(SMALL), DefinitionRegistry().get("blast"),
                   FaultPlan(["duplicated_side_effect"]), snapshot_every=3, seed=5)
    _, findings = _feed(run)
    assert len([f for f in findings if f.kind == "STATE_DEVIATION"]) == 1


@needs_traces
@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.stem)
def test_a_clean_stream_of_every_shared_trace_raises_no_anomaly(path) -> None:
    run = simulate(_history(path), DefinitionRegistry().get("x"),
                   FaultPlan(duplicate_deliveries=20, reorder_distance=6), snapshot_every=7)
    mirrors, findings = _feed(run)
    assert findings == []
    assert mirrors.stats.compared == len(run.snapshots)


@needs_traces
def test_a_corruption_of_a_variable_that_already_deviates_is_still_reported() -> None:
    events = _history(SMALL)
    clean = simulate(events, DefinitionRegistry().get("blast"), FaultPlan(), snapshot_every=5)
    # The completion of one action is lost: action.<id> deviates from then on (persistently).
    lost = next(e for e in events if e.kind.name == "ACTION_COMPLETED" and e.sequence > 20)
    history = [e for e in clean.history if e.sequence != lost.sequence]
    # Later, the primary reports a corrupted value for that very variable.
    later = next(s for s in clean.snapshots if s.sequence > lost.sequence + 10)
    name = f"action.{lost.action_id}"
    snapshots = [s if s is not later else StateSnapshot(
        s.workflow_id, s.run_id, s.sequence, s.timestamp_ms,
        {**s.variables, name: "COMPLETED~corrupted"}) for s in clean.snapshots]
    _, findings = _feed(PrimaryRun(history, snapshots, []))
    assert any(f.kind == "STATE_DEVIATION" and f.sequence == later.sequence for f in findings), [
        (f.kind, f.sequence) for f in findings]
