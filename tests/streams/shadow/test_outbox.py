"""The shadows' outbox (pure): a step's effects grouped by run as the records and rows they are
sent as, written in a step record the run's record names until they are confirmed, and given
back by a restore only when named."""

from __future__ import annotations

from schemas.codec import default_codec
from streams.forecasting.forecaster import Forecaster
from streams.shadow.changelog import (
    record_key,
    restore_all,
    shadow_record,
    step_key,
    step_record,
)
from streams.shadow.outbox import Outbox, Outgoing, outgoing_by_run, step_records
from streams.shadow.pool import ReservationPool
from streams.shadow.workflows import Effects, ShadowConfig, ShadowWorkflows
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import TRACES

TRACE = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"


def _effects(shadows: ShadowWorkflows, workflow_id: str, count: int) -> Effects:
    effects = Effects()
    for event in history_from_trace(load_wfformat(TRACE), workflow_id, "run", 0, slots=4)[:count]:
        effects.extend(shadows.on_event(event, 0))
    return effects


def _shadows() -> ShadowWorkflows:
    return ShadowWorkflows(Forecaster(), ReservationPool({"memory_bytes": 1e15}),
                           ShadowConfig())


def test_effects_are_grouped_by_run_with_a_row_for_every_command() -> None:
    shadows = _shadows()
    effects = _effects(shadows, "wf-a", 30)
    effects.extend(_effects(shadows, "wf-b", 30))
    by_run = outgoing_by_run(effects, shadows, stamp=123)
    assert set(by_run) == {("wf-a", "run"), ("wf-b", "run")}
    for (workflow_id, _), out in by_run.items():
        assert out.commands and all(c["workflow_id"] == workflow_id for c in out.commands)
        assert [r["command_id"] for r in out.rows["reservations"]] == [
            c["command_id"] for c in out.commands]
        assert out.rows["predictions"]
    assert sum(len(o.commands) for o in by_run.values()) == len(effects.commands)


def test_unconfirmed_steps_are_named_until_confirmed_oldest_first() -> None:
    outbox = Outbox()
    a, b = ("wf-a", "run"), ("wf-b", "run")
    outbox.add("s1", [a, b])
    outbox.add("s2", [a])
    assert outbox.steps_of(a) == ["s1", "s2"] and outbox.steps_of(b) == ["s1"]
    outbox.confirm("s1")
    assert outbox.steps_of(a) == ["s2"] and outbox.steps_of(b) == []
    outbox.forget([a])
    outbox.confirm("s2")
    assert len(outbox) == 0 and outbox.steps_of(a) == []


def _records(shadows: ShadowWorkflows, key: tuple[str, str], out: Outgoing, named: list[str],
             must_be_named: bool = True) -> list[tuple[bytes, dict]]:
    """A step record holding ``out`` for ``key``, then the run's record naming ``named``."""
    codec = default_codec()
    step = step_record("s1", 0, [(*key, must_be_named, out.text())])
    run = shadow_record(shadows.runs[key], shadows.pool.reservations_of(*key),
                        shadows.pool.versions_of(*key), steps=named)
    return [(step_key("s1.0.0"), codec.decode(codec.encode("ShadowRecord", step)).record),
            (record_key(*key), codec.decode(codec.encode("ShadowRecord", run)).record)]


def test_effects_a_run_record_names_come_back_whole() -> None:
    shadows = _shadows()
    key = ("wf-a", "run")
    out = outgoing_by_run(_effects(shadows, "wf-a", 40), shadows, stamp=5)[key]
    restored = restore_all(_records(shadows, key, out, named=["s1"]))
    assert [Outgoing.from_json([e.outgoing]) for e in restored.resend] == [out]
    assert restored.steps == [step_key("s1.0.0")] and restored.orphans == 0


def test_effects_no_run_record_names_are_orphans_and_dropped() -> None:
    """The worker died after the step record and before the run's record: the effects were
    never sent, and the restored run (without the step) decides again from the input."""
    shadows = _shadows()
    key = ("wf-a", "run")
    out = outgoing_by_run(_effects(shadows, "wf-a", 40), shadows, stamp=5)[key]
    restored = restore_all(_records(shadows, key, out, named=[]))
    assert restored.resend == [] and restored.orphans == 1
    assert restored.steps == [step_key("s1.0.0")]  # tombstoned by the new owner


def test_effects_of_a_forgotten_run_need_no_naming() -> None:
    shadows = _shadows()
    key = ("wf-a", "run")
    out = outgoing_by_run(_effects(shadows, "wf-a", 40), shadows, stamp=5)[key]
    restored = restore_all(_records(shadows, key, out, named=[], must_be_named=False)[:1])
    assert len(restored.resend) == 1 and restored.runs == []


def test_a_runs_effects_too_large_for_one_step_record_are_split_in_order() -> None:
    """A large batch decides more for one run than a step record holds: the effects are still
    written ahead, split across records, and a restore gives them back whole, in order."""
    shadows = _shadows()
    key = ("wf-a", "run")
    out = outgoing_by_run(_effects(shadows, "wf-a", 300), shadows, stamp=5)[key]
    limit = len(out.text()) // 3
    packed = step_records("s1", [(key, 0, True, out)], max_bytes=limit)
    assert len(packed.records) >= 3 and packed.unwritten == []
    codec = default_codec()
    assert all(len(codec.encode("ShadowRecord", record)) <= limit + 200
               for _, record, _ in packed.records)
    run = shadow_record(shadows.runs[key], shadows.pool.reservations_of(*key),
                        shadows.pool.versions_of(*key), steps=["s1"])
    restored = restore_all([*[(k, codec.decode(codec.encode("ShadowRecord", r)).record)
                              for k, r, _ in packed.records],
                            (record_key(*key), codec.decode(codec.encode("ShadowRecord", run))
                             .record)])
    assert Outgoing.from_json([e.outgoing for e in restored.resend]) == out
    assert restored.orphans == 0


def test_a_single_effect_larger_than_a_step_record_is_left_unwritten() -> None:
    shadows = _shadows()
    key = ("wf-a", "run")
    out = outgoing_by_run(_effects(shadows, "wf-a", 30), shadows, stamp=5)[key]
    packed = step_records("s1", [(key, 0, True, out)], max_bytes=300)
    assert packed.records == []
    assert Outgoing.from_json([piece.to_json() for _, piece in packed.unwritten]) == out
