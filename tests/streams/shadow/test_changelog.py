"""Shadow workflows written to their changelog records and restored: a run restored in the
middle goes on exactly as if nothing had happened (same commands, same ids, same amounts)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from schemas.codec import default_codec
from streams.forecasting.forecaster import Forecaster
from streams.shadow.changelog import record_key, restore_all, seal_finished, shadow_record
from streams.shadow.pool import ReservationPool
from streams.shadow.workflows import USAGE_PREFIX, ActionShadow, ShadowConfig, ShadowWorkflows
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.support import TRACES

GB = 10**9
TRACE = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"


def _shadows(forecaster: Forecaster | None = None) -> ShadowWorkflows:
    return ShadowWorkflows(forecaster or Forecaster(),
                           ReservationPool({"memory_bytes": 500 * GB}, partitions=2),
                           ShadowConfig())


def _events() -> list:
    trace = load_wfformat(TRACE)
    first = history_from_trace(trace, "wf-a", "run-1", 1_000_000, slots=4)
    second = history_from_trace(trace, "wf-a", "run-2", 9_000_000, slots=4)
    return first + second


def _commands(effects: list) -> list[tuple[str, str, str, dict]]:
    return [(c.command_id, c.op, c.reservation.action_id, dict(c.reservation.amounts))
            for e in effects for c in e.commands]


def test_a_restored_run_goes_on_as_if_uninterrupted() -> None:
    events = _events()
    cut = len(events) * 3 // 4  # inside the second run, with actions in flight
    whole = _shadows()
    expected = _commands([whole.on_event(e, 0, partition=1) for e in events])

    before = _shadows()
    done = _commands([before.on_event(e, 0, partition=1) for e in events[:cut]])
    codec = default_codec()
    entries = [(record_key(*key), codec.decode(codec.encode("ShadowRecord", shadow_record(
        run, before.pool.reservations_of(*key), before.pool.versions_of(*key),
        before.transitions.of_type(run.workflow_type)))).record)
               for key, run in before.runs.items()]
    # A new owner: the forecaster's learning reaches it separately (stored feedback); the
    # transitions that decide placeholders come with the records.
    after = _shadows(copy.deepcopy(before.forecaster))
    for item in restore_all(entries).runs:
        after.transitions.merge(item.run.workflow_type, item.transitions)
        after.load(item.run, item.reservations, item.versions, 0)
    assert after.pool.in_use("memory_bytes") == before.pool.in_use("memory_bytes") > 0
    rest = _commands([after.on_event(e, 0, partition=1) for e in events[cut:]])
    assert done + rest == expected
    # Events delivered again after the restore are repeats: nothing is reserved twice.
    assert _commands([after.on_event(e, 0, partition=1) for e in events[cut - 20:cut]]) == []


def test_sealed_chunks_keep_records_small_and_a_restore_whole() -> None:
    events = _events()
    cut = len(events) * 3 // 4
    whole = _shadows()
    expected = _commands([whole.on_event(e, 0, partition=1) for e in events])
    codec = default_codec()
    before = _shadows()
    written: list[tuple[bytes, dict]] = []  # the changelog, in order, as the service writes it
    done = []
    for event in events[:cut]:
        done += _commands([before.on_event(event, 0, partition=1)])
        for key, run in before.runs.items():  # a step: chunks first, then the run records
            chunk = seal_finished(run, every=5)
            if chunk is not None:
                before.pool.forget_versions(*key, chunk.reservation_ids)
                written.append((chunk.key, chunk.record))
            record = shadow_record(run, before.pool.reservations_of(*key),
                                   before.pool.versions_of(*key),
                                   before.transitions.of_type(run.workflow_type))
            written.append((record_key(*key), record))
    assert sum(r.sealed_chunks for r in before.runs.values()) >= 10
    # A record holds fewer than 5 finished actions besides those in flight, not the whole run.
    latest = {k: json.loads(r["state"]) for k, r in written if r["format"] == 1}
    for key, run in before.runs.items():
        kept = latest[record_key(*key)]["actions"]
        assert sum(bool(a.get("done")) for a in kept) < 5 < len(run.sealed)
        assert {a["id"] for a in kept} == set(run.actions)

    after = _shadows(copy.deepcopy(before.forecaster))
    restored = restore_all([(k, codec.decode(codec.encode("ShadowRecord", r)).record)
                            for k, r in written])
    assert restored.missing_chunks == 0
    for item in restored.runs:
        after.transitions.merge(item.run.workflow_type, item.transitions)
        after.load(item.run, item.reservations, item.versions, 0)
    for key, run in before.runs.items():
        assert {(a.action_id, a.attempt) for a in after.runs[key].actions.values()} == {
            (a.action_id, a.attempt) for a in run.actions.values()}
        assert after.runs[key].sealed == run.sealed
    assert done + _commands([after.on_event(e, 0, partition=1) for e in events[cut:]]) == expected
    # Repeats of sealed actions' events are recognised after the restore: nothing is reserved.
    assert _commands([after.on_event(e, 0, partition=1) for e in events[:cut]]) == []


def test_a_chunk_whose_record_never_followed_is_not_merged() -> None:
    shadows = _shadows()
    for event in _events()[:150]:
        shadows.on_event(event, 0, partition=1)
    key = ("wf-a", "run-1")
    run = shadows.runs[key]
    record = shadow_record(run, shadows.pool.reservations_of(*key),
                           shadows.pool.versions_of(*key))
    chunk = seal_finished(run, every=3)
    assert chunk is not None and run.sealed_chunks == 1
    # The worker died after writing the chunk, before the record leaving its actions out.
    (item,) = restore_all([(record_key(*key), record), (chunk.key, chunk.record)]).runs
    assert item.run.sealed_chunks == 0 and not item.run.sealed
    assert set(item.run.actions) == set(run.actions) | set(run.sealed)


def test_a_tombstone_forgets_a_run_and_revoked_partitions_hold_nothing() -> None:
    shadows = _shadows()
    for event in _events()[:40]:
        shadows.on_event(event, 0, partition=1)
    key = ("wf-a", "run-1")
    record = shadow_record(shadows.runs[key], shadows.pool.reservations_of(*key),
                           shadows.pool.versions_of(*key))
    assert restore_all([(record_key(*key), record), (record_key(*key), None)]).runs == []
    assert shadows.drop_partitions({1}) == [key]
    assert shadows.pool.in_use("memory_bytes") == pytest.approx(0, abs=1) and not shadows.runs


def test_input_the_restored_state_reflects_is_skipped_and_later_input_is_not() -> None:
    events = _events()[:60]
    before = _shadows()
    for offset, event in enumerate(events):
        before.on_event(event, 0, partition=1, offset=offset)
    key = ("wf-a", "run-1")
    run = before.runs[key]
    action_id = next(a.action_id for a in run.actions.values() if a.completed_ms is None)
    before.on_telemetry("wf-a", "run-1", action_id, [5e8], [1.0], [0], [0.0],
                        offset=7)
    record = shadow_record(run, before.pool.reservations_of(*key),
                           before.pool.versions_of(*key))
    after = _shadows()
    (item,) = restore_all([(record_key(*key), record)]).runs
    after.load(item.run, item.reservations, item.versions, 0)
    restored = after.runs[key]
    assert restored.applied == {"history": 59, "telemetry": 7}
    usage = restored.actions[action_id].usage
    # Consumed again after the crash: already in the state, so not counted twice.
    after.on_telemetry("wf-a", "run-1", action_id, [5e8], [1.0], [0], [0.0], offset=7)
    assert usage.samples == 1
    assert _commands([after.on_event(e, 0, partition=1, offset=i)
                      for i, e in enumerate(events)]) == []
    # New input is applied.
    after.on_telemetry("wf-a", "run-1", action_id, [6e8], [1.0], [0], [0.0], offset=8)
    assert usage.samples == 2 and usage.peak_memory_bytes == 6e8


def test_a_sealed_action_is_known_by_its_id_alone() -> None:
    shadows = _shadows()
    events = _events()
    first_run = [e for e in events if e.run_id == "run-1"]
    for event in first_run:
        shadows.on_event(event, 0, partition=1)
    key = ("wf-a", "run-1")
    run = shadows.runs[key]
    chunk = seal_finished(run, every=1)
    assert chunk is not None and run.sealed and not any(
        a.action_id in run.sealed for a in run.actions.values())
    action_id, (attempt, order) = next(iter(run.sealed.items()))
    scheduled = next(e for e in first_run
                     if e.action_id == action_id and e.kind.name == "ACTION_SCHEDULED")
    # Its repeated events and late telemetry change nothing and hold nothing.
    assert _commands([shadows.on_event(e, 0, partition=1) for e in first_run]) == []
    assert shadows.on_telemetry("wf-a", "run-1", action_id, [1e9], [1.0], [0], [0.0])
    assert not shadows.early_usage
    # A retry is a new attempt in the same place: reserved anew, no transition learned.
    count, learned = run.action_count(), shadows.transitions.of_type(run.workflow_type)
    retry = dataclasses.replace(scheduled, attempt=attempt + 1, sequence=10_000)
    [(_, op, retried, _)] = _commands([shadows.on_event(retry, 0, partition=1)])
    assert (op, retried) == ("RESERVE", action_id)
    assert run.actions[action_id].order == order and action_id not in run.sealed
    assert run.action_count() == count
    assert shadows.transitions.of_type(run.workflow_type) == learned


def _unmeasured(events: list) -> list:
    """The events without the usage the engine reported: feedback must wait for telemetry."""
    return [dataclasses.replace(e, attributes={k: v for k, v in e.attributes.items()
                                               if not k.startswith(USAGE_PREFIX)})
            for e in events]


def _write_step(shadows: ShadowWorkflows, written: list[tuple[bytes, dict]]) -> None:
    """What the service writes for a step: chunks first, then the run records."""
    for key, run in shadows.runs.items():
        chunk = seal_finished(run, every=5)
        if chunk is not None:
            shadows.pool.forget_versions(*key, chunk.reservation_ids)
            written.append((chunk.key, chunk.record))
        written.append((record_key(*key), shadow_record(
            run, shadows.pool.reservations_of(*key), shadows.pool.versions_of(*key),
            shadows.transitions.of_type(run.workflow_type))))


def _feedback(effects) -> list[tuple[str, int, float]]:
    return sorted((f.action_id, round(f.actual["memory_bytes"]), round(f.deviation, 9))
                  for f in effects.feedback)


def test_actions_awaiting_feedback_are_sealed_in_full_and_restored_with_their_usage() -> None:
    events = _unmeasured([e for e in _events() if e.run_id == "run-1"])
    cut = len(events) * 3 // 4
    codec = default_codec()
    before = _shadows()
    written: list[tuple[bytes, dict]] = []
    for event in events[:cut]:
        before.on_event(event, 0, partition=1)
        _write_step(before, written)
    key = ("wf-a", "run-1")
    run = before.runs[key]
    awaiting = [a for a in run.actions.values() if a.completed_ms is not None]
    assert len(awaiting) > 10 and not any(a.feedback_done for a in awaiting)
    assert all(a.sealed_in is not None for a in awaiting[:10])
    # The record names none of them: it holds what is in flight, not the run's whole past.
    kept = json.loads(written[-1][1]["state"])["actions"]
    assert {a["id"] for a in kept} == {a.action_id for a in run.actions.values()
                                      if a.sealed_in is None}
    # Late telemetry for two sealed actions, one then scored: the record says just that.
    late, scored = awaiting[0], awaiting[1]
    for action in (late, scored):
        before.on_telemetry("wf-a", "run-1", action.action_id, [7e8], [2.0], [0], [0.0])
    scored_feedback = _feedback(before.feedback(run, scored, scored.usage.actual()))
    assert scored_feedback
    _write_step(before, written)
    kept = {a["id"]: a for a in json.loads(written[-1][1]["state"])["actions"]}
    assert set(kept[late.action_id]) == {"id", "attempt", "sealed_in", "usage"}
    assert kept[scored.action_id].get("done")

    after = _shadows(copy.deepcopy(before.forecaster))
    restored = restore_all([(k, codec.decode(codec.encode("ShadowRecord", r)).record)
                            for k, r in written])
    assert restored.missing_chunks == 0
    for item in restored.runs:
        after.load(item.run, item.reservations, item.versions, 0)
    again = after.runs[key]
    def state(action: ActionShadow) -> tuple:  # a scored action is kept by identity only
        return (action.action_id, action.attempt, action.feedback_done,
                None if action.feedback_done else action.usage)

    assert sorted(map(state, again.actions.values())) == sorted(map(state, run.actions.values()))
    assert again.sealed == run.sealed
    assert again.actions[late.action_id].usage == late.usage
    # Once their grace is over, both score the same: the usage restored is the usage folded.
    assert _feedback(after.due_feedback(10**9, 0)) == _feedback(before.due_feedback(10**9, 0))
    # Scored after its seal, the action is sealed again by identity, superseding its chunk.
    _write_step(after, written)
    later = restore_all([(k, codec.decode(codec.encode("ShadowRecord", r)).record)
                         for k, r in written])
    (item,) = [i for i in later.runs if (i.run.workflow_id, i.run.run_id) == key]
    assert scored.action_id in item.run.sealed and scored.action_id not in item.run.actions
