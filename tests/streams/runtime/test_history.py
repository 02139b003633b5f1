"""Decoding a batch of history messages: good events kept in order, bad ones dead-lettered."""

from __future__ import annotations

from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent
from streams.runtime.history import decode_history
from streams.runtime.messages import RawMessage

CODEC = default_codec()


def _event(seq: int, workflow_id: str = "wf") -> HistoryEvent:
    return HistoryEvent(workflow_id, "run", "t", seq, EventKind.STATE_UPDATED, 1000 + seq,
                        values={"x": seq})


def test_bad_messages_become_dead_letters_with_reason_and_origin() -> None:
    single = CODEC.encode("HistoryEvent", _event(1).to_avro())
    envelope = CODEC.encode("HistoryEnvelope", {"workflow_id": "wf",
                                                "events": [_event(2).to_avro(),
                                                           _event(3).to_avro()]})
    telemetry = CODEC.encode("TelemetryBatch", {
        "workflow_id": "wf", "run_id": "r", "action_id": "a", "action_type": None, "attempt": 1,
        "timestamps_ms": [], "cpu_cores": [], "memory_bytes": [], "network_bytes": [],
        "cost": []})
    messages = [
        RawMessage("wf.history", 0, 10, b"wf", single),
        RawMessage("wf.history", 0, 11, b"wf", b"not avro at all"),
        RawMessage("wf.history", 0, 12, b"wf", envelope),
        RawMessage("wf.history", 1, 5, None, None),
        RawMessage("wf.history", 1, 6, b"wf", envelope[:-3]),
        RawMessage("wf.history", 1, 7, b"wf", telemetry),
    ]
    batch = decode_history(messages, CODEC, now_ms=42)
    assert [(x.event.sequence, x.partition, x.offset) for x in batch.events] == [
        (1, 0, 10), (2, 0, 12), (3, 0, 12)]
    assert [(d.topic, d.partition, d.offset) for d in batch.rejects] == [
        ("wf.history", 0, 11), ("wf.history", 1, 5), ("wf.history", 1, 6), ("wf.history", 1, 7)]
    reasons = [d.reason for d in batch.rejects]
    assert "marker" in reasons[0]
    assert reasons[1] == "empty message value"
    assert "corrupt or truncated HistoryEnvelope" in reasons[2]
    assert "expected HistoryEvent or HistoryEnvelope, got TelemetryBatch" in reasons[3]
    assert batch.rejects[0].payload == b"not avro at all"
    assert batch.rejects[2].payload == envelope[:-3]
    assert all(d.failed_ms == 42 for d in batch.rejects)
