"""The codec: every schema round-trips, and nothing but a whole known message decodes."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import (
    HEADER_SIZE,
    MARKER,
    SCHEMA_DIR,
    CodecError,
    _schema_fingerprint,
    default_codec,
)
from schemas.records import EventKind, HistoryEvent, Resources, history_events

CODEC = default_codec()
DOCUMENTS = {p.stem: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.avsc")}
LONG = st.integers(-(2**63), 2**63 - 1)
INT = st.integers(-(2**31), 2**31 - 1)


def _strategy(schema: Any, named: dict[str, Any], namespace: str = "") -> st.SearchStrategy:
    """Records that fit an Avro schema (as written in the .avsc files)."""
    if isinstance(schema, list):
        return st.one_of([_strategy(s, named, namespace) for s in schema])
    if isinstance(schema, str):
        primitive = {"null": st.none(), "boolean": st.booleans(), "int": INT, "long": LONG,
                     "float": st.floats(width=32, allow_nan=False),
                     "double": st.floats(allow_nan=False), "bytes": st.binary(max_size=64),
                     "string": st.text(max_size=24)}
        if schema in primitive:
            return primitive[schema]
        full = schema if "." in schema else f"{namespace}.{schema}"
        return st.deferred(lambda: _strategy(named[full], named, namespace))
    kind = schema["type"]
    if kind in ("record", "enum"):
        namespace = schema.get("namespace", namespace)
        named[f"{namespace}.{schema['name']}"] = schema
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: _strategy(f["type"], named, namespace) for f in schema["fields"]})
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_strategy(schema["items"], named, namespace), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), _strategy(schema["values"], named, namespace),
                               max_size=4)
    return _strategy(kind, named, namespace)


def _strategies() -> dict[str, st.SearchStrategy]:
    named: dict[str, Any] = {}
    # Referenced types first, so their definitions are known by name.
    order = sorted(DOCUMENTS, key=lambda n: n not in ("Resources", "HistoryEvent",
                                                      "TelemetryBatch"))
    return {name: _strategy(DOCUMENTS[name], named) for name in order}


STRATEGIES = _strategies()


def _same(a: Any, b: Any) -> bool:
    """Equality where floats compare bit for bit (so -0.0 and 0.0 differ, as on the wire)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("type_name", sorted(DOCUMENTS))
def test_every_schema_round_trips_generated_records(type_name: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(STRATEGIES[type_name])
    def round_trip(record: dict[str, Any]) -> None:
        encoded = CODEC.encode(type_name, record)
        assert encoded.startswith(CODEC.record_type(type_name).header)
        decoded = CODEC.decode(encoded)
        assert decoded.type_name == type_name
        assert _same(decoded.record, record)

    round_trip()


def test_messages_use_avro_single_object_encoding() -> None:
    record = {"payload": b"x", "key": None, "reason": "r", "topic": "t", "partition": 1,
              "offset": 2, "failed_ms": 3}
    encoded = CODEC.encode("DeadLetter", record)
    assert encoded[:2] == b"\xc3\x01"
    assert encoded[2:HEADER_SIZE] == CODEC.record_type("DeadLetter").fingerprint
    # The Avro spec's CRC-64-AVRO test vector: the fingerprint of "int" is 0x7275d51a3f395c8f,
    # and single-object encoding writes it little endian.
    assert _schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_typed_history_event_survives_an_envelope() -> None:
    event = HistoryEvent("wf", "run", "blast", 7, EventKind.ACTION_COMPLETED, 1_700_000_000_123,
                         action_id="a1", action_type="blastall", attempt=2,
                         attributes={"input_bytes": 12.5}, labels={"queue": "q"},
                         declared=Resources(cpu_cores=2.0, memory_bytes=2**31),
                         values={"n": 3, "x": 1.5, "s": "ok", "b": True, "z": None})
    envelope = CODEC.encode("HistoryEnvelope", {"workflow_id": "wf",
                                                "events": [event.to_avro()] * 3})
    assert history_events(CODEC.decode(envelope)) == [event] * 3


def test_envelope_with_another_workflows_event_is_rejected() -> None:
    stray = HistoryEvent("other", "run", "t", 1, EventKind.WORKFLOW_STARTED, 1)
    envelope = CODEC.encode("HistoryEnvelope", {"workflow_id": "wf", "events": [stray.to_avro()]})
    with pytest.raises(CodecError, match="holds events of"):
        history_events(CODEC.decode(envelope))


def test_record_of_the_wrong_type_for_history_is_rejected() -> None:
    snapshot = CODEC.encode("StateSnapshot", {"workflow_id": "w", "run_id": "r", "sequence": 1,
                                              "timestamp_ms": 1, "variables": {}})
    with pytest.raises(CodecError, match="expected HistoryEvent"):
        history_events(CODEC.decode(snapshot))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_codec_error_only(data: bytes) -> None:
    with pytest.raises(CodecError):
        CODEC.decode(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(DOCUMENTS)), st.binary(max_size=300))
def test_random_body_behind_a_known_header_is_rejected_or_exact(type_name: str,
                                                                body: bytes) -> None:
    # A random body may happen to be a valid record; then it must re-encode to the same bytes.
    message = CODEC.record_type(type_name).header + body
    try:
        decoded = CODEC.decode(message)
    except CodecError:
        return
    assert CODEC.encode(decoded.type_name, decoded.record) == message


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_every_truncation_of_a_message_is_rejected(data: st.DataObject) -> None:
    type_name = data.draw(st.sampled_from(sorted(DOCUMENTS)))
    message = CODEC.encode(type_name, data.draw(STRATEGIES[type_name]))
    for cut in range(len(message)):
        with pytest.raises(CodecError):
            CODEC.decode(message[:cut])


def test_unknown_fingerprint_and_trailing_bytes_are_rejected() -> None:
    good = CODEC.encode("Resources", {"cpu_cores": 1.0, "memory_bytes": None,
                                      "network_bytes": None, "cost": math.pi})
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        CODEC.decode(MARKER + b"\x00" * 8 + good[HEADER_SIZE:])
    with pytest.raises(CodecError, match="trailing bytes"):
        CODEC.decode(good + b"\x00")
    with pytest.raises(CodecError, match="marker"):
        CODEC.decode(b"\x00\x01" + good[2:])


def test_encoding_a_record_that_does_not_fit_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="does not fit"):
        CODEC.encode("HistoryEvent", {"workflow_id": 3})
    with pytest.raises(CodecError, match="unknown record type"):
        CODEC.encode("Nope", {})
