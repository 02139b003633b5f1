"""Hostile but schema-valid input refused at the boundary, with the field named; the same ranges
guard the feedback route, definitions, settings, the mirror's sequence and the forecaster."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent, Resources, StateSnapshot, TelemetryBatch
from streams.forecasting.forecaster import MAX_RETRY_DOUBLINGS, Forecaster, retry_factor
from streams.forecasting.sizing import TaskContext
from streams.mirror.definitions import DEFAULT, DefinitionError, parse_definition
from streams.mirror.run import MirrorLimits, RunMirror
from streams.runtime.history import decode_history
from streams.runtime.http import BadRequest
from streams.runtime.messages import RawMessage
from streams.runtime.validation import (
    MAX_ATTEMPT,
    MAX_BYTES,
    MAX_CPU_CORES,
    MAX_SEQUENCE,
    MAX_TEXT_CHARS,
    MAX_TIMESTAMP_MS,
    violation,
)
from streams.shadow.routes import parse_usage
from topology.settings import Settings, SettingsError

CODEC = default_codec()
LONG = st.integers(-(2**63), 2**63 - 1)
INT = st.integers(-(2**31), 2**31 - 1)
DOUBLE = st.floats(allow_nan=True, allow_infinity=True)


def _event(**changes: object) -> HistoryEvent:
    event = HistoryEvent("wf", "run", "t", 1, EventKind.ACTION_COMPLETED, 1_700_000_000_000,
                         "a1", "align", 1, {"input_bytes": 10.0}, {"q": "x"},
                         Resources(1.0, 2**30, 0, 0.5), {"hits": 3})
    return dataclasses.replace(event, **changes)


@pytest.mark.parametrize(("changes", "field"), [
    ({"sequence": -1}, "sequence"), ({"sequence": 0}, "sequence"),
    ({"sequence": MAX_SEQUENCE + 1}, "sequence"), ({"sequence": 2**62}, "sequence"),
    ({"timestamp_ms": -5}, "timestamp_ms"), ({"timestamp_ms": MAX_TIMESTAMP_MS}, "timestamp_ms"),
    ({"attempt": 0}, "attempt"), ({"attempt": 1026}, "attempt"), ({"attempt": -3}, "attempt"),
    ({"attributes": {"input_bytes": -1.0}}, "attributes['input_bytes']"),
    ({"attributes": {"usage.memory_bytes": math.inf}}, "attributes['usage.memory_bytes']"),
    ({"attributes": {"x": math.nan}}, "attributes['x']"),
    ({"attributes": {"usage.network_bytes": 2.0**63}}, "attributes['usage.network_bytes']"),
    ({"declared": Resources(math.nan, None, None, None)}, "declared.cpu_cores"),
    ({"declared": Resources(None, -1, None, None)}, "declared.memory_bytes"),
    ({"declared": Resources(None, None, 2**62, None)}, "declared.network_bytes"),
    ({"values": {"v": math.inf}}, "values['v']"),
    ({"values": {"s": "x" * (MAX_TEXT_CHARS + 1)}}, "values['s']"),
    ({"labels": {"l": "x" * 2_000_000}}, "labels['l']"),
    ({"error": "e" * (MAX_TEXT_CHARS + 1)}, "error"),
    ({"workflow_id": ""}, "workflow_id"), ({"action_id": "a" * 10_000}, "action_id"),
    ({"values": {f"k{i}": i for i in range(10_001)}}, "values"),
])
def test_each_hostile_field_is_named(changes: dict[str, object], field: str) -> None:
    wrong = violation(b"wf" if changes.get("workflow_id") is None else b"",
                      [_event(**changes)])
    assert wrong is not None and wrong.field == field, wrong


def test_a_clean_event_and_the_key_rule() -> None:
    assert violation(b"wf", [_event()]) is None
    assert violation(b"other", [_event()]).field == "key"  # type: ignore[union-attr]
    assert violation(None, [_event()]).field == "key"  # type: ignore[union-attr]


def test_one_bad_event_rejects_the_whole_envelope_and_the_batch_goes_on() -> None:
    bad = CODEC.encode("HistoryEnvelope", {"workflow_id": "wf", "events": [
        _event(sequence=1).to_avro(), _event(sequence=2, attempt=-1).to_avro()]})
    good = CODEC.encode("HistoryEvent", _event(sequence=3).to_avro())
    batch = decode_history([RawMessage("wf.history", 0, 1, b"wf", bad),
                            RawMessage("wf.history", 0, 2, b"wf", good)], CODEC, now_ms=7)
    assert [x.event.sequence for x in batch.events] == [3]
    [letter] = batch.rejects
    assert letter.offset == 1 and letter.reason.startswith("invalid [1].attempt:")


def test_telemetry_and_snapshots_are_checked_too() -> None:
    batch = TelemetryBatch("wf", "run", "a1", "align", 1, [1, 2], [0.5, math.nan],
                           [10, 20], [0, 0], [0.0, 0.0])
    assert violation(b"wf", [batch]).field == "cpu_cores[1]"  # type: ignore[union-attr]
    huge = dataclasses.replace(batch, cpu_cores=[0.5, 0.5], network_bytes=[0, 2**63 - 1])
    assert violation(b"wf", [huge]).field == "network_bytes[1]"  # type: ignore[union-attr]
    snapshot = StateSnapshot("wf", "run", -1, 0, {})
    assert violation(b"wf", [snapshot]).field == "sequence"  # type: ignore[union-attr]
    snapshot = StateSnapshot("wf", "run", 3, 0, {"x": math.nan})
    assert violation(b"wf", [snapshot]).field == "variables['x']"  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(stamps=st.lists(LONG, min_size=1, max_size=6), cpu=st.lists(DOUBLE, min_size=6, max_size=6),
       memory=st.lists(LONG, min_size=6, max_size=6))
def test_a_telemetry_batch_passes_exactly_when_every_sample_does(
        stamps: list[int], cpu: list[float], memory: list[int]) -> None:
    n = len(stamps)
    batch = TelemetryBatch("wf", "run", "a1", "align", 1, stamps, cpu[:n], memory[:n],
                           [0] * n, [0.0] * n)
    found = violation(b"wf", [batch])
    bad_stamp = next((i for i, t in enumerate(stamps) if not 0 <= t < MAX_TIMESTAMP_MS), None)
    bad_cpu = next((i for i, c in enumerate(cpu[:n])
                    if not (math.isfinite(c) and 0 <= c <= MAX_CPU_CORES)), None)
    bad_memory = next((i for i, m in enumerate(memory[:n]) if not 0 <= m <= MAX_BYTES), None)
    if bad_stamp is not None:
        assert found is not None and found.field == f"timestamps_ms[{bad_stamp}]"
    elif bad_cpu is not None:
        assert found is not None and found.field == f"cpu_cores[{bad_cpu}]"
    elif bad_memory is not None:
        assert found is not None and found.field == f"memory_bytes[{bad_memory}]"
    else:
        assert found is None


@settings(max_examples=300, deadline=None)
@given(sequence=LONG, timestamp=LONG, attempt=INT, attribute=DOUBLE, declared=LONG,
       value=st.one_of(LONG, DOUBLE, st.text(max_size=5)))
def test_what_passes_fits_the_tables_and_the_forecaster(
        sequence: int, timestamp: int, attempt: int, attribute: float, declared: int,
        value: object) -> None:
    event = _event(sequence=sequence, timestamp_ms=timestamp, attempt=attempt,
                   attributes={"usage.memory_bytes": attribute},
                   declared=Resources(None, declared, None, None), values={"v": value})
    if violation(b"wf", [event]) is None:
        assert 1 <= sequence <= MAX_SEQUENCE and 0 <= timestamp < MAX_TIMESTAMP_MS
        assert 1 <= attempt <= MAX_ATTEMPT
        assert math.isfinite(attribute) and 0 <= attribute <= MAX_BYTES
        assert 0 <= declared <= MAX_BYTES
        assert not isinstance(value, float) or math.isfinite(value)


@pytest.mark.parametrize(("usage", "field"), [
    ("memory=1GiB,network=1e309", "network"), ("cpu=1e309", "cpu"),
    ("memory=2e15TiB", "memory"), ("cpu=1,cost=1e300", "cost"),
])
def test_the_feedback_route_refuses_non_finite_and_huge_amounts(usage: str, field: str) -> None:
    with pytest.raises(BadRequest, match=f"^{field}: "):
        parse_usage(usage)
    assert parse_usage("memory=1GiB,network=300MB") == {"memory_bytes": 2**30,
                                                        "network_bytes": 3e8}


@pytest.mark.parametrize(("name", "value"), [
    ("pool_memory_gib", "nan"), ("pool_cpu_cores", "inf"), ("mirror_gap_seconds", "-inf"),
    ("feedback_grace_seconds", "-1"), ("confidence_threshold", "nan"),
    ("likely_next_probability", "2"), ("web_port", "-1"), ("sink_retry_max_seconds", "nan"),
])
def test_settings_refuse_nan_infinity_and_negatives_by_name(name: str, value: str) -> None:
    variable = "SHADOWFLOW_" + name.upper()
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(("document", "field"), [
    ({"weights": {"wf.status": math.nan}}, "wf.status"), ({"tolerance": math.inf}, "tolerance"),
    ({"missing_weight": -1}, "missing_weight"), ({"severity": {"high": math.nan}}, "high"),
    ({"results": {"blastall": {"hits": {"variable": "wf.status"}}}}, "results.blastall.hits"),
    ({"results": {"blastall": {"hits": "action.a1"}}}, "results.blastall.hits"),
])
def test_definitions_refuse_non_finite_numbers_and_reserved_result_names(
        document: dict[str, object], field: str) -> None:
    with pytest.raises(DefinitionError, match=field):
        parse_definition({"workflow_type": "blast", **document})


def test_one_far_sequence_does_not_make_the_run_jump() -> None:
    mirror = RunMirror("wf", "run", "t", MirrorLimits(reorder_window=10, gap_timeout_ms=1))
    for seq in (1, 2):
        mirror.offer(_event(sequence=seq, kind=EventKind.STATE_UPDATED), DEFAULT, now_ms=0)
    mirror.offer(_event(sequence=2 + 101, kind=EventKind.STATE_UPDATED), DEFAULT, now_ms=0)
    assert mirror.too_far == 1 and not mirror.pending
    assert mirror.expire(10_000, DEFAULT) == []
    mirror.offer(_event(sequence=3, kind=EventKind.STATE_UPDATED), DEFAULT, now_ms=10_000)
    assert mirror.sequence == 3 and mirror.duplicates == 0


def test_the_forecaster_never_learns_non_finite_values_and_retries_stay_bounded() -> None:
    forecaster = Forecaster()
    task = TaskContext("w", "r", "align")
    for bad in (math.nan, math.inf, -1.0):
        forecaster.observe(task, "memory", bad, 0.0, 1.0)
    forecaster.observe(task, "memory", 1e9, 0.0, math.nan)
    assert not forecaster._by_type
    assert retry_factor(1026) == 2.0**MAX_RETRY_DOUBLINGS and retry_factor(1) == 1.0
    retried = dataclasses.replace(task, attempt=2**31 - 1)
    assert math.isfinite(forecaster.forecast(retried, "memory").amount)
