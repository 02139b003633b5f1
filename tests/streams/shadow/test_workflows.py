"""Shadow workflows: forecasts and their sources, reservations ahead, feedback and alerts."""

from __future__ import annotations

from schemas.records import EventKind, HistoryEvent, Resources
from streams.forecasting.forecaster import Forecaster
from streams.shadow.changelog import record_key, restore_all, shadow_record
from streams.shadow.ledger import ReservationLedger
from streams.shadow.pool import ADJUST, RELEASE, RESERVE, ReservationPool
from streams.shadow.workflows import ShadowConfig, ShadowWorkflows
from tests.support import steps_of

GB = 10**9


def _shadows(capacity: float = 100 * GB) -> ShadowWorkflows:
    return ShadowWorkflows(Forecaster(), ReservationPool({"memory_bytes": capacity}, 60_000),
                           ShadowConfig(confidence_threshold=0.8))


def _shadows_like(shadows: ShadowWorkflows) -> ShadowWorkflows:
    # The same shadows, with the first run's learning undone: still no history for the type,
    # and the alert for it already given.
    shadows.forecaster = Forecaster()
    return shadows


def _event(run: str, seq: int, kind: EventKind, action: str | None = None,
           action_type: str | None = None, at: int = 0) -> HistoryEvent:
    return HistoryEvent("wf-" + run, run, "etl", seq, kind, at, action_id=action,
                        action_type=action_type)


def _run(shadows: ShadowWorkflows, run: str, peaks: dict[str, float]) -> list:
    """A run of actions A then B (each scheduled, started, given telemetry, completed)."""
    effects = [shadows.on_event(_event(run, 1, EventKind.WORKFLOW_STARTED), 0)]
    seq = 2
    for name, peak in peaks.items():
        effects.append(shadows.on_event(_event(run, seq, EventKind.ACTION_SCHEDULED, name,
                                               name[0], at=seq * 1000), seq * 1000))
        effects.append(shadows.on_event(_event(run, seq + 1, EventKind.ACTION_STARTED, name,
                                               name[0], at=seq * 1000 + 10), seq * 1000 + 10))
        shadows.on_telemetry("wf-" + run, run, name, [peak * 0.5, peak], [1.0, 1.0], [10, 20],
                             [0.1, 0.1])
        effects.append(shadows.on_event(_event(run, seq + 2, EventKind.ACTION_COMPLETED, name,
                                               name[0], at=seq * 1000 + 500), seq * 1000 + 500))
        seq += 3
    effects.append(shadows.due_feedback(10**9, 0))
    return effects


def test_manual_then_model_as_history_grows() -> None:
    shadows = _shadows()
    first = _run(shadows, "r1", {"A1": 1 * GB})
    [(_, prediction)] = [p for e in first for p in e.predictions]
    assert prediction.source == "MANUAL" and prediction.allocation["memory_bytes"] == 2 * 2**30
    assert any("manual sizing needed" in a.message for e in first for a in e.alerts)
    again = _run(_shadows_like(shadows), "r1b", {"A1b": 1 * GB})
    assert not any("manual sizing needed" in a.message for e in again for a in e.alerts)
    for n in range(2, 8):
        _run(shadows, f"r{n}", {f"A{n}": 1 * GB})
    later = _run(shadows, "r9", {"A9": 1 * GB})
    prediction = next(p for e in later for _, p in e.predictions if not p.likely)
    assert prediction.source == "MODEL" and prediction.confidence >= 0.8
    assert 1 * GB <= prediction.allocation["memory_bytes"] < 1.5 * GB
    assert prediction.allocation["network_bytes"] > 0  # learned too


def test_low_confidence_says_historical_but_keeps_the_best_estimate() -> None:
    shadows = _shadows()
    shadows.config.confidence_threshold = 0.99
    for n in range(4):
        _run(shadows, f"r{n}", {f"A{n}": 1 * GB})
    effects = _run(shadows, "r9", {"A9": 1 * GB})
    prediction = next(p for e in effects for _, p in e.predictions if not p.likely)
    assert prediction.source == "HISTORICAL" and prediction.confidence < 0.99
    # Not a plain percentile in its place: the forecaster's amount, as offline.
    assert prediction.allocation["memory_bytes"] == prediction.forecasts["memory_bytes"].amount
    assert prediction.allocation["memory_bytes"] >= 1 * GB


def test_likely_next_actions_are_reserved_ahead_and_claimed() -> None:
    shadows = _shadows()
    _run(shadows, "r1", {"A1": 1 * GB, "B1": 2 * GB})
    effects = _run(shadows, "r2", {"A2": 1 * GB, "B2": 2 * GB})
    ops = [(c.op, c.reservation.action_id) for e in effects for c in e.commands]
    # Run 2: A is likely at the start, B after A; the real actions claim the placeholders.
    # The action claiming the placeholder names it from then on.
    assert ("RESERVE", "next:A") in ops and ("ADJUST", "A2") in ops
    assert ("RESERVE", "next:B") in ops and ("ADJUST", "B2") in ops
    assert all(op in (RESERVE, ADJUST, RELEASE) for op, _ in ops)
    assert shadows.pool.stats.lead_times_ms and min(shadows.pool.stats.lead_times_ms) > 0
    leads = [f.lead_time_ms for e in effects for f in e.feedback]
    assert leads and all(lead is not None and lead > 0 for lead in leads)
    assert shadows.pool.held == {}, "everything released at the end"


def test_feedback_scores_the_forecast_and_alerts_on_a_large_miss() -> None:
    shadows = _shadows()
    for n in range(6):
        _run(shadows, f"r{n}", {f"A{n}": 1 * GB})
    effects = _run(shadows, "big", {"Abig": 5 * GB})
    [feedback] = [f for e in effects for f in e.feedback]
    assert feedback.underprovisioned and feedback.actual["memory_bytes"] == 5 * GB
    assert any("exceeded its memory allocation" in a.message for e in effects for a in e.alerts)


def test_an_exhausted_pool_falls_back_to_a_smaller_size_and_alerts() -> None:
    # Free after the hog: 1.2 GB; the forecast (about 1.5 GB) does not fit, the median does.
    shadows = _shadows(capacity=1.4 * GB)
    for n in range(6):
        _run(shadows, f"r{n}", {f"A{n}": 1 * GB * (1 + n / 20)})
    shadows.pool.reserve("other", "x", "hog", "t", {"memory_bytes": 0.2 * GB}, confidence=1,
                         source="MODEL", now_ms=0)
    effects = _run(shadows, "r9", {"A9": 1 * GB})
    alerts = [a.message for e in effects for a in e.alerts]
    assert any("smaller fallback" in m for m in alerts), alerts


def test_telemetry_that_overtakes_its_action_is_held_until_the_action_is_known() -> None:
    shadows = _shadows()
    assert shadows.on_telemetry("wf-r", "r", "A1", [5.0, 7.0], [1.0], [3], [0.5])
    shadows.on_event(_event("r", 1, EventKind.WORKFLOW_STARTED), 0)
    shadows.on_event(_event("r", 2, EventKind.ACTION_SCHEDULED, "A1", "A"), 0)
    usage = shadows.runs[("wf-r", "r")].actions["A1"].usage
    assert (usage.peak_memory_bytes, usage.network_bytes) == (7.0, 3)
    assert shadows.early_usage == {}


def test_a_finished_run_releases_reservations_of_actions_whose_completion_was_lost() -> None:
    shadows = _shadows()
    shadows.on_event(_event("r", 1, EventKind.WORKFLOW_STARTED), 0)
    shadows.on_event(_event("r", 2, EventKind.ACTION_SCHEDULED, "A1", "A"), 0)
    shadows.on_event(_event("r", 3, EventKind.ACTION_STARTED, "A1", "A"), 0)
    # ACTION_COMPLETED of A1 never arrives; the run ends anyway.
    effects = shadows.on_event(_event("r", 5, EventKind.WORKFLOW_COMPLETED), 0)
    assert [(c.op, c.reservation.action_id) for c in effects.commands] == [("RELEASE", "A1")]
    assert shadows.pool.held == {}


def _action_event(run: str, seq: int, kind: EventKind, action: str, *, attempt: int = 1,
                  usage: float | None = None, declared: float | None = None) -> HistoryEvent:
    attributes = {} if usage is None else {"usage.memory_bytes": usage, "usage.cpu_cores": 1.0}
    return HistoryEvent("wf-" + run, run, "etl", seq, kind, seq * 1000, action_id=action,
                        action_type="A", attempt=attempt, attributes=attributes,
                        declared=None if declared is None else Resources(memory_bytes=declared))


def _trained(peak: float, runs: int = 4) -> ShadowWorkflows:
    shadows = _shadows()
    for n in range(runs):
        _run(shadows, f"t{n}", {f"A{n}": peak})
    return shadows


def test_usage_reported_at_completion_is_learned_at_once() -> None:
    shadows = _shadows()
    shadows.on_event(_action_event("r", 1, EventKind.ACTION_SCHEDULED, "a1"), 0)
    shadows.on_event(_action_event("r", 2, EventKind.ACTION_STARTED, "a1"), 0)
    done = shadows.on_event(_action_event("r", 3, EventKind.ACTION_COMPLETED, "a1",
                                          usage=1 * GB), 0)
    [feedback] = done.feedback  # no grace period, no telemetry needed
    assert feedback.actual["memory_bytes"] == 1 * GB
    assert shadows.due_feedback(10**9, 0).feedback == []  # and not scored twice


def test_an_action_is_sized_again_when_it_starts() -> None:
    shadows = _trained(1 * GB)
    scheduled = shadows.on_event(_action_event("r", 1, EventKind.ACTION_SCHEDULED, "late"), 0)
    [(_, before)] = [(r, p) for r, p in scheduled.predictions if not p.likely]
    first = before.allocation["memory_bytes"]
    # Another action of the type completes first, much larger: the forecast must follow.
    shadows.on_event(_action_event("r", 2, EventKind.ACTION_SCHEDULED, "big"), 0)
    shadows.on_event(_action_event("r", 3, EventKind.ACTION_STARTED, "big"), 0)
    shadows.on_event(_action_event("r", 4, EventKind.ACTION_COMPLETED, "big", usage=8 * GB), 0)
    started = shadows.on_event(_action_event("r", 5, EventKind.ACTION_STARTED, "late"), 10)
    [adjust] = started.commands
    assert adjust.op == ADJUST and adjust.reservation.reservation_id == before.reservation_id
    assert adjust.reservation.amounts["memory_bytes"] > first
    assert shadows.runs[("wf-r", "r")].actions["late"].prediction.allocation == (
        adjust.reservation.amounts)
    # Unchanged knowledge, unchanged amount: no command.
    shadows.on_event(_action_event("r", 6, EventKind.ACTION_SCHEDULED, "same"), 20)
    assert shadows.on_event(_action_event("r", 7, EventKind.ACTION_STARTED, "same"),
                            30).commands == []


def test_a_retry_gets_its_own_reservation_with_double_the_memory() -> None:
    shadows = _trained(1 * GB)
    first = shadows.on_event(_action_event("r", 1, EventKind.ACTION_SCHEDULED, "a"), 0)
    [(_, one)] = [(r, p) for r, p in first.predictions if not p.likely]
    shadows.on_event(_action_event("r", 2, EventKind.ACTION_STARTED, "a"), 0)
    failed = shadows.on_event(_action_event("r", 3, EventKind.ACTION_FAILED, "a"), 0)
    assert [c.op for c in failed.commands if c.op == RELEASE] == [RELEASE]
    retry = shadows.on_event(_action_event("r", 4, EventKind.ACTION_SCHEDULED, "a",
                                           attempt=2), 0)
    [(_, two)] = [(r, p) for r, p in retry.predictions if not p.likely]
    [reserve] = [c for c in retry.commands if c.op == RESERVE]
    assert two.reservation_id != one.reservation_id
    assert reserve.reservation.amounts["memory_bytes"] == 2 * one.allocation["memory_bytes"]
    # The same attempt scheduled again is a duplicate.
    assert shadows.on_event(_action_event("r", 5, EventKind.ACTION_SCHEDULED, "a", attempt=2),
                            0).commands == []


def test_declared_memory_is_the_request_when_nothing_is_known() -> None:
    shadows = _shadows()
    effects = shadows.on_event(_action_event("r", 1, EventKind.ACTION_SCHEDULED, "a",
                                             declared=3 * GB), 0)
    [(_, prediction)] = [(r, p) for r, p in effects.predictions if not p.likely]
    assert prediction.source == "MANUAL" and prediction.allocation["memory_bytes"] == 3 * GB


def test_command_ids_never_repeat_across_placeholder_cycles() -> None:
    shadows = _shadows()
    commands = []
    for n in range(4):  # each completion reserves the next A ahead: one placeholder per cycle
        effects = _run(shadows, f"c{n}", {f"A{n}{i}": 1 * GB for i in range(6)})
        effects.append(shadows.on_event(_event(f"c{n}", 99, EventKind.WORKFLOW_COMPLETED), 0))
        commands += [c for e in effects for c in e.commands]
    ids = [c.command_id for c in commands]
    assert len(ids) == len(set(ids)), "a command id repeated for a different command"
    records = [{"command_id": c.command_id, "op": c.op,
                "reservation_id": c.reservation.reservation_id, "workflow_id": "w",
                "run_id": c.reservation.run_id, "action_id": c.reservation.action_id,
                "action_type": c.reservation.action_type, "source": c.reservation.source,
                "resources": dict(c.reservation.amounts)} for c in commands]
    ledger = ReservationLedger().apply_all(records)
    assert ledger.balanced, ledger.problems[:3]
    assert ledger.reserved > 8


def test_the_same_history_gives_the_same_command_ids() -> None:
    def ids() -> list[str]:
        shadows = _shadows()
        return [c.command_id for n in range(3)
                for e in _run(shadows, f"d{n}", {f"A{n}{i}": 1 * GB for i in range(3)})
                for c in e.commands]
    assert ids() == ids()


def test_a_started_reservation_is_released_after_its_maximum_lifetime() -> None:
    pool = ReservationPool({"memory_bytes": 10 * GB}, ttl_ms=1_000, max_lifetime_ms=50_000)
    [reserve], _ = pool.reserve("w", "r", "a", "t", {"memory_bytes": GB}, confidence=1.0,
                                source="MODEL", now_ms=0)
    pool.start(reserve.reservation.reservation_id, 500)
    assert pool.expire(40_000) == []  # running, within its lifetime
    [release] = pool.expire(50_500)
    assert (release.op, release.reason) == (RELEASE, "expired running")
    assert pool.in_use("memory_bytes") == 0


def _finished_runs(shadows: ShadowWorkflows, prefix: str, count: int, at: int) -> None:
    """``count`` runs of one action each, with telemetry held for an action never scheduled
    and the usage learned from, finished at ``at``."""
    for n in range(count):
        run = f"{prefix}{n}"
        shadows.on_telemetry("wf-" + run, run, "never", [1.0], [1.0], [1.0], [0.0])
        shadows.on_event(_event(run, 1, EventKind.WORKFLOW_STARTED), at)
        shadows.on_event(_event(run, 2, EventKind.ACTION_SCHEDULED, "A", "A"), at)
        done = _event(run, 3, EventKind.ACTION_COMPLETED, "A", "A")
        done.attributes["usage.memory_bytes"] = 1.0 * GB
        shadows.on_event(done, at)
        shadows.on_event(_event(run, 4, EventKind.WORKFLOW_COMPLETED), at)


def _evict_cost(finished: int, active: int) -> int:
    shadows = _shadows(capacity=10**9 * GB)
    for n in range(active):
        shadows.on_event(_event(f"a{n}", 1, EventKind.WORKFLOW_STARTED), 0)
    _finished_runs(shadows, "f", finished, 1_000)
    steps = steps_of(lambda: shadows.evict_finished(1_000 + 60_001, 60_000))
    assert len(shadows.runs) == active and shadows.early_count == 0
    assert shadows.early_usage == {} and shadows.forecaster._run_max == {}
    return steps


def test_evicting_finished_runs_costs_time_linear_in_how_many_go() -> None:
    small, large = _evict_cost(300, 0), _evict_cost(3_000, 0)
    assert large <= 11 * small, (small, large)
    # Runs still active cost nothing, and neither do finished runs not yet due.
    assert _evict_cost(300, 3_000) == small
    shadows = _shadows(capacity=10**9 * GB)
    _finished_runs(shadows, "f", 2_000, 1_000)
    assert steps_of(lambda: shadows.evict_finished(1_000 + 60_000, 60_000)) < 20


def test_restored_finished_runs_are_evicted_a_retention_after_their_restore() -> None:
    before = _shadows()
    _finished_runs(before, "done", 1, 1_000)
    before.on_event(_event("going", 1, EventKind.WORKFLOW_STARTED), 1_000)
    after = _shadows()
    for item in restore_all([(record_key(*key), shadow_record(run, [], {}))
                             for key, run in before.runs.items()]).runs:
        after.load(item.run, item.reservations, item.versions, 50_000)
    assert after.evict_finished(50_000 + 60_000, 60_000) == []
    assert after.evict_finished(50_000 + 60_001, 60_000) == [("wf-done0", "done0")]
    assert set(after.runs) == {("wf-going", "going")}


def test_telemetry_beyond_the_early_buffer_is_refused_and_counted() -> None:
    shadows = _shadows()
    shadows.max_early_usage = 2
    assert shadows.on_telemetry("wf-r", "r", "A1", [1.0], [1.0], [0], [0.0])
    assert shadows.on_telemetry("wf-r", "r", "A2", [1.0], [1.0], [0], [0.0])
    assert shadows.on_telemetry("wf-r", "r", "A1", [2.0], [1.0], [0], [0.0])  # held already
    assert not shadows.on_telemetry("wf-r", "r", "A3", [1.0], [1.0], [0], [0.0])
    assert (shadows.early_count, shadows.early_dropped) == (2, 1)
    shadows.on_event(_event("r", 1, EventKind.WORKFLOW_STARTED), 0)
    shadows.on_event(_event("r", 2, EventKind.ACTION_SCHEDULED, "A1", "A"), 0)
    assert shadows.early_count == 1  # room again
    assert shadows.on_telemetry("wf-r", "r", "A3", [1.0], [1.0], [0], [0.0])


def test_an_action_without_telemetry_is_looked_at_once_per_grace_then_given_up() -> None:
    """An engine that sends no telemetry: completed actions wait for their usage, but each is
    looked at once per grace (not at every tick), and given up after the maximum wait, so
    nothing waits, nor stays in the run's record, for ever."""
    shadows = ShadowWorkflows(Forecaster(), ReservationPool({"memory_bytes": 100 * GB}, 60_000),
                              ShadowConfig(feedback_max_wait_ms=12_000))
    shadows.on_event(_event("r", 1, EventKind.WORKFLOW_STARTED), 0)
    for n in range(50):
        name = f"A{n}"
        for seq, kind in enumerate((EventKind.ACTION_SCHEDULED, EventKind.ACTION_STARTED,
                                    EventKind.ACTION_COMPLETED)):
            shadows.on_event(_event("r", 2 + 3 * n + seq, kind, name, "A"), 1_000)
    run = shadows.runs[("wf-r", "r")]
    assert shadows.due_feedback(2_000, 5_000).feedback == []  # not due yet: nothing looked at
    # Due: each is looked at and sent back to wait; until a grace later, none is looked at.
    assert steps_of(lambda: shadows.due_feedback(6_000, 5_000)) > 50
    assert steps_of(lambda: shadows.due_feedback(10_999, 5_000)) < 20
    shadows.on_telemetry("wf-r", "r", "A0", [1.0 * GB], [1.0], [0], [0.0])
    assert [f.action_id for f in shadows.due_feedback(11_000, 5_000).feedback] == ["A0"]
    assert shadows.feedback_abandoned == 0 and not run.actions["A1"].feedback_done
    assert shadows.due_feedback(16_000, 5_000).feedback == []
    assert shadows.feedback_abandoned == 49
    assert all(action.feedback_done for action in run.actions.values())
    assert shadows.due_feedback(10**9, 5_000).feedback == []
