"""The contract with other Avro libraries, checked against Apache Avro's reference implementation.

Every schema's fingerprint is the one Apache's ``avro`` package computes from the ``.avsc`` files,
and a message of every record type written by one side is read by the other. Messages written
with the fingerprints of the codec before issue 15 stay readable.
"""

from __future__ import annotations

import io
import json
from typing import Any

import avro.io
import avro.schema
import pytest
from avro.name import Names

from schemas.codec import HEADER_SIZE, MARKER, SCHEMA_DIR, _parse_all, default_codec
from schemas.records import (
    DeadLetter,
    EventKind,
    HistoryEvent,
    Resources,
    StateSnapshot,
    TelemetryBatch,
)

CODEC = default_codec()
DOCUMENTS = {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.avsc"))}
# Apache's parser needs a type defined before another file names it.
REFERENCED_FIRST = ("Resources", "HistoryEvent", "TelemetryBatch")
# What the codec wrote before issue 15; messages with these headers exist on the topics.
LEGACY = {"HistoryEnvelope": "a95665975aa56a29", "MirrorRecord": "8e680ce56bf4132b"}


def _apache_schemas() -> dict[str, avro.schema.Schema]:
    names = Names()
    order = [*REFERENCED_FIRST, *(n for n in DOCUMENTS if n not in REFERENCED_FIRST)]
    return {name: avro.schema.make_avsc_object(DOCUMENTS[name], names) for name in order}


APACHE = _apache_schemas()

_EVENT = HistoryEvent(
    "wf-7f3a", "run-0192", "blast", 12, EventKind.ACTION_COMPLETED, 1_718_000_123_456,
    action_id="align-3", action_type="blastall", attempt=2,
    attributes={"input_bytes": 7.5e9, "query_count": 1200.0},
    labels={"task_queue": "bio-large", "site": "Zürich"},
    declared=Resources(cpu_cores=8.0, memory_bytes=32 * 2**30, network_bytes=None, cost=0.42),
    values={"hits": 3417, "evalue": 1e-30, "status": "ok", "converged": True, "note": None},
)
_STARTED = HistoryEvent("wf-7f3a", "run-0192", "blast", 1, EventKind.WORKFLOW_STARTED,
                        1_718_000_000_000)
_FAILED = HistoryEvent("wf-7f3a", "run-0192", "blast", 13, EventKind.ACTION_FAILED,
                       1_718_000_124_000, action_id="align-4", action_type="blastall",
                       error="OOMKilled: exceeded 32 GiB")
_BATCH = TelemetryBatch("wf-7f3a", "run-0192", "align-3", "blastall", 2,
                        [1_718_000_100_000, 1_718_000_101_000, 1_718_000_102_000],
                        [3.5, 7.9, 7.95], [2**31, 30 * 2**30, 31 * 2**30], [0, 1_048_576, 512],
                        [0.0, 0.0011, 0.0012])

SAMPLES: dict[str, dict[str, Any]] = {
    "Anomaly": {
        "anomaly_id": "an-wf-7f3a-12-dev", "workflow_id": "wf-7f3a", "run_id": "run-0192",
        "sequence": 12, "kind": "STATE_DEVIATION", "severity": "HIGH", "score": 0.87,
        "detected_ms": 1_718_000_125_000, "message": "2 variables deviate from the mirror",
        "action_id": None,
        "variables": [
            {"name": "hits", "status": "DIFFERENT", "primary": 3417, "mirror": 3400,
             "weight": 1.0, "contribution": 0.6},
            {"name": "status", "status": "MISSING_IN_MIRROR", "primary": "ok", "mirror": None,
             "weight": 0.5, "contribution": 0.27},
        ],
    },
    "DeadLetter": DeadLetter(b"\xc3\x01\x00\x00garbage", b"wf-7f3a",
                             "unknown schema fingerprint 0000676172626167", "wf.history", 3,
                             981_234, 1_718_000_126_000).to_avro(),
    "HistoryEnvelope": {"workflow_id": "wf-7f3a",
                        "events": [_STARTED.to_avro(), _EVENT.to_avro(), _FAILED.to_avro()]},
    "HistoryEvent": _EVENT.to_avro(),
    "MirrorRecord": {
        "workflow_id": "wf-7f3a", "run_id": "run-0192", "workflow_type": "blast",
        "kind": "DELTA", "base_sequence": 10, "sequence": 12,
        "variables": {"hits": 3417, "evalue": 1e-30, "converged": True, "note": None},
        "removed": ["tmp_dir"], "pending": [_FAILED.to_avro()], "duplicates": 2,
        "gaps": [{"first": 11, "last": 11}],
    },
    "ReservationCommand": {
        "command_id": "cmd-wf-7f3a-align-4-reserve", "reservation_id": "res-wf-7f3a-align-4",
        "op": "RESERVE", "workflow_id": "wf-7f3a", "run_id": "run-0192", "action_id": "align-4",
        "action_type": "blastall",
        "resources": Resources(cpu_cores=8.0, memory_bytes=36 * 2**30, network_bytes=2**20,
                               cost=None).to_avro(),
        "confidence": 0.95, "source": "MODEL", "issued_ms": 1_718_000_124_500,
        "expires_ms": 1_718_000_724_500,
    },
    "ActionOutcome": {
        "learner": "4f2a", "workflow_id": "wf-7f3a", "run_id": "run-0192",
        "workflow_type": "blast", "action_id": "align-3", "action_type": "blastall",
        "attempt": 2, "input_bytes": 7.5e9,
        "actual": Resources(cpu_cores=7.2, memory_bytes=30 * 2**30, network_bytes=2**21,
                            cost=0.4).to_avro(),
        "allocated_memory_bytes": 32.0 * 2**30, "runtime_s": 181.5, "previous_type": "split",
        "kind": "USAGE"},
    "Resources": Resources(cpu_cores=0.25, memory_bytes=512 * 2**20).to_avro(),
    "ShadowRecord": {"workflow_id": "wf-7f3a", "run_id": "run-0192", "workflow_type": "blast",
                     "partition": 3, "format": 1, "state": '{"actions":[],"likely":{}}'},
    "StateSnapshot": StateSnapshot("wf-7f3a", "run-0192", 12, 1_718_000_123_456,
                                   {"hits": 3417, "evalue": 1e-30, "status": "ok",
                                    "converged": True, "note": None, "delta": -4}).to_avro(),
    "TelemetryBatch": _BATCH.to_avro(),
    "TelemetryEnvelope": {"workflow_id": "wf-7f3a", "batches": [_BATCH.to_avro()] * 2},
}


def _apache_read(type_name: str, body: bytes) -> Any:
    """Read a binary body with Apache Avro; the whole body must be one record."""
    stream = io.BytesIO(body)
    record = avro.io.DatumReader(APACHE[type_name]).read(avro.io.BinaryDecoder(stream))
    assert stream.tell() == len(body), "Apache Avro left bytes of the body unread"
    return record


def _apache_message(type_name: str, record: Any) -> bytes:
    """A single-object-encoded message written by Apache Avro, header built from its fingerprint."""
    schema = APACHE[type_name]
    out = io.BytesIO()
    out.write(b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO"))
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(out))
    return out.getvalue()


def test_every_schema_has_a_contract_sample() -> None:
    assert sorted(SAMPLES) == sorted(APACHE) == CODEC.type_names


@pytest.mark.parametrize("type_name", sorted(DOCUMENTS))
def test_fingerprint_is_apache_avros(type_name: str) -> None:
    assert (CODEC.record_type(type_name).fingerprint.hex()
            == APACHE[type_name].fingerprint("CRC-64-AVRO").hex())


@pytest.mark.parametrize("type_name", sorted(DOCUMENTS))
def test_apache_avro_reads_what_the_codec_writes(type_name: str) -> None:
    message = CODEC.encode(type_name, SAMPLES[type_name])
    assert message[:2] == MARKER
    assert message[2:HEADER_SIZE] == APACHE[type_name].fingerprint("CRC-64-AVRO")
    assert _apache_read(type_name, message[HEADER_SIZE:]) == SAMPLES[type_name]


@pytest.mark.parametrize("type_name", sorted(DOCUMENTS))
def test_codec_reads_what_apache_avro_writes(type_name: str) -> None:
    message = _apache_message(type_name, SAMPLES[type_name])
    decoded = CODEC.decode(message)
    assert decoded.type_name == type_name
    assert decoded.record == SAMPLES[type_name]
    assert CODEC.encode(type_name, decoded.record) == message


def test_fingerprints_do_not_depend_on_the_order_of_the_files() -> None:
    expected = {n: CODEC.record_type(n).fingerprint for n in CODEC.type_names}
    for order in (sorted(DOCUMENTS, reverse=True), [*REFERENCED_FIRST[::-1], *sorted(DOCUMENTS)]):
        parsed = _parse_all({n: DOCUMENTS[n] for n in dict.fromkeys(order)})
        assert {n: t.fingerprint for n, t in parsed.items()} == expected


def test_only_the_two_mis_fingerprinted_schemas_have_legacy_fingerprints() -> None:
    legacy = {n: [fp.hex() for fp in CODEC.record_type(n).legacy_fingerprints]
              for n in CODEC.type_names}
    assert {n: fps for n, fps in legacy.items() if fps} == {n: [fp] for n, fp in LEGACY.items()}


@pytest.mark.parametrize("type_name", sorted(LEGACY))
def test_message_with_the_legacy_fingerprint_still_decodes(type_name: str) -> None:
    message = CODEC.encode(type_name, SAMPLES[type_name])
    assert message[2:HEADER_SIZE] != bytes.fromhex(LEGACY[type_name]), "writes the legacy one"
    legacy_message = MARKER + bytes.fromhex(LEGACY[type_name]) + message[HEADER_SIZE:]
    decoded = CODEC.decode(legacy_message)
    assert decoded.type_name == type_name
    assert decoded.record == SAMPLES[type_name]
