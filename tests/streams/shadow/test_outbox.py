"""The shadows' outbox (pure): a step's effects grouped by run as the records and rows they are
sent as, kept until confirmed, and carried through a run's record unchanged."""

from __future__ import annotations

from schemas.codec import default_codec
from streams.forecasting.forecaster import Forecaster
from streams.shadow.changelog import record_key, restore_all, shadow_record
from streams.shadow.outbox import Outbox, Outgoing, outgoing_by_run
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


def test_unconfirmed_steps_stay_until_confirmed_oldest_first() -> None:
    outbox = Outbox()
    a, b = ("wf-a", "run"), ("wf-b", "run")
    first = outbox.add({a: Outgoing(commands=[{"n": 1}]), b: Outgoing(commands=[{"n": 2}])})
    second = outbox.add({a: Outgoing(commands=[{"n": 3}])})
    assert [o.commands for o in outbox.of(a)] == [[{"n": 1}], [{"n": 3}]]
    outbox.confirm(first)
    assert [o.commands for o in outbox.of(a)] == [[{"n": 3}]] and outbox.of(b) == []
    outbox.forget([a])
    outbox.confirm(second)
    assert len(outbox) == 0


def test_a_record_carries_its_outbox_and_gives_it_back_whole() -> None:
    shadows = _shadows()
    effects = _effects(shadows, "wf-a", 40)
    key = ("wf-a", "run")
    out = outgoing_by_run(effects, shadows, stamp=5)[key]
    half = len(out.commands) // 2
    steps = [Outgoing(commands=out.commands[:half]),
             Outgoing(out.commands[half:], out.outcomes, out.alerts, out.rows)]
    codec = default_codec()
    record = codec.decode(codec.encode("ShadowRecord", shadow_record(
        shadows.runs[key], shadows.pool.reservations_of(*key), shadows.pool.versions_of(*key),
        outbox=[s.text() for s in steps]))).record
    (restored,) = restore_all([(record_key(*key), record)])
    assert Outgoing.from_json(restored.outbox) == out
