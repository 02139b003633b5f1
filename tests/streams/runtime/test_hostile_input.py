"""Hostile but schema-valid records on every input topic, interleaved with clean workflows,
against one running worker: the worker stays up, every clean event is stored exactly once, every
hostile record is either stored (when it is within the documented ranges) or dead-lettered with
a reason naming its field, and a restarted worker does not crash on them.

The hostile records are drawn by hypothesis (a few examples, no shrinking: each example is a
round trip through the broker, the worker and ClickHouse)."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas.codec import default_codec
from schemas.records import (
    DeadLetter,
    EventKind,
    HistoryEvent,
    Resources,
    StateSnapshot,
    TelemetryBatch,
)
from sinks.clickhouse import connect
from streams.runtime import validation as v
from streams.runtime.kafka import read_topic
from tests.support import WorkerProcess, http, wait_for
from topology import topics
from topology.settings import Settings

CODEC = default_codec()
TOO_LONG = "x" * (v.MAX_TEXT_CHARS + 1)


@dataclass
class Hostile:
    """One hostile message: where it goes, what it carries, and the field it breaks (``None``
    when every value is extreme but within the documented ranges: it must be stored)."""

    topic: str
    key: bytes
    value: bytes
    workflow_id: str
    kind: str
    field: str | None


def _event(workflow_id: str, **changes: object) -> HistoryEvent:
    event = HistoryEvent(workflow_id, "run", "hostile", 1, EventKind.ACTION_COMPLETED,
                         1_700_000_000_000, "a1", "align", 1, {"input_bytes": 1e6}, {"q": "x"},
                         Resources(1.0, 2**30, 0, 0.1), {"hits": 3})
    return dataclasses.replace(event, **changes)


def _batch(workflow_id: str, **changes: object) -> TelemetryBatch:
    batch = TelemetryBatch(workflow_id, "run", "a1", "align", 1, [1_700_000_000_000], [0.5],
                           [2**20], [100], [0.01])
    return dataclasses.replace(batch, **changes)


LONGS = st.integers(-(2**63), 2**63 - 1)
# (kind, field, strategy of the hostile value, whether the value is outside the ranges)
HISTORY_CASES = [
    ("sequence<1", "sequence", st.integers(-(2**63), 0), True),
    ("sequence>max", "sequence", st.integers(v.MAX_SEQUENCE + 1, 2**63 - 1), True),
    ("sequence=max", "sequence", st.just(v.MAX_SEQUENCE), False),
    ("timestamp<0", "timestamp_ms", st.integers(-(2**63), -1), True),
    ("timestamp>max", "timestamp_ms", st.integers(v.MAX_TIMESTAMP_MS, 2**63 - 1), True),
    ("timestamp=0", "timestamp_ms", st.just(0), False),
    ("attempt<1", "attempt", st.integers(-(2**31), 0), True),
    ("attempt>max", "attempt", st.integers(v.MAX_ATTEMPT + 1, 2**31 - 1), True),
    ("attempt=max", "attempt", st.just(v.MAX_ATTEMPT), False),
]
NUMBER_CASES = [
    ("attribute non-finite", st.sampled_from([math.nan, math.inf, -math.inf]), True),
    ("attribute negative bytes", st.floats(-1e300, -1e-9), True),
    ("attribute huge bytes", st.floats(float(v.MAX_BYTES) * 1.01, 1e308), True),
    ("attribute max bytes", st.just(float(v.MAX_BYTES)), False),
]


@st.composite
def hostile_history(draw: st.DrawFn, prefix: str, n: int) -> Hostile:
    workflow_id = f"{prefix}h{n}"
    choice = draw(st.integers(0, len(HISTORY_CASES) + len(NUMBER_CASES) + 5))
    field: str | None
    if choice < len(HISTORY_CASES):
        kind, field, values, refused = HISTORY_CASES[choice]
        event = _event(workflow_id, **{field: draw(values)})
        field = field if refused else None
    elif choice < len(HISTORY_CASES) + len(NUMBER_CASES):
        kind, values, refused = NUMBER_CASES[choice - len(HISTORY_CASES)]
        name = draw(st.sampled_from(["input_bytes", "usage.memory_bytes",
                                     "usage.network_bytes"]))
        event = _event(workflow_id, attributes={name: draw(values)})
        field = f"attributes[{name!r}]" if refused else None
    else:
        kind = draw(st.sampled_from(["declared", "value", "label", "key", "envelope"]))
        event, field = _event(workflow_id), None
        if kind == "declared":
            memory = draw(st.one_of(st.integers(-(2**63), -1),
                                    st.integers(v.MAX_BYTES + 1, 2**63 - 1)))
            event, field = _event(workflow_id, declared=Resources(None, memory, None, None)), \
                "declared.memory_bytes"
        elif kind == "value":
            value = draw(st.sampled_from([math.nan, math.inf, 1e300, TOO_LONG]))
            event, field = _event(workflow_id, values={"v": value}), "values['v']"
        elif kind == "label":
            event, field = _event(workflow_id, labels={"l": TOO_LONG}), "labels['l']"
        elif kind == "key":
            return Hostile(topics.HISTORY, f"{prefix}other".encode(),
                           CODEC.encode("HistoryEvent", event.to_avro()), workflow_id, kind,
                           "key")
        else:
            events = [_event(workflow_id, sequence=s, kind=EventKind.STATE_UPDATED)
                      for s in range(1, 4)]
            events[1] = dataclasses.replace(events[1], attempt=0)
            value = CODEC.encode("HistoryEnvelope", {"workflow_id": workflow_id,
                                                     "events": [e.to_avro() for e in events]})
            return Hostile(topics.HISTORY, workflow_id.encode(), value, workflow_id, kind,
                           "[1].attempt")
    return Hostile(topics.HISTORY, workflow_id.encode(),
                   CODEC.encode("HistoryEvent", event.to_avro()), workflow_id, kind, field)


@st.composite
def hostile_telemetry(draw: st.DrawFn, prefix: str, n: int) -> Hostile:
    workflow_id = f"{prefix}t{n}"
    column = draw(st.sampled_from(["cpu_cores", "memory_bytes", "network_bytes", "cost",
                                   "timestamps_ms", "attempt"]))
    if column in ("cpu_cores", "cost"):
        value: object = draw(st.sampled_from([math.nan, math.inf, -1.0, 1e300]))
    elif column == "attempt":
        value = draw(st.integers(-(2**31), 0))
    else:
        too_big = v.MAX_TIMESTAMP_MS if column == "timestamps_ms" else v.MAX_BYTES + 1
        value = draw(st.one_of(st.integers(-(2**63), -1), st.integers(too_big, 2**63 - 1)))
    batch = _batch(workflow_id, **{column: value if column == "attempt" else [value]})
    field = column if column == "attempt" else f"{column}[0]"
    return Hostile(topics.TELEMETRY, workflow_id.encode(),
                   CODEC.encode("TelemetryBatch", batch.to_avro()), workflow_id,
                   f"telemetry {column}", field)


@st.composite
def hostile_state(draw: st.DrawFn, prefix: str, n: int) -> Hostile:
    workflow_id = f"{prefix}s{n}"
    case = draw(st.sampled_from(["sequence", "timestamp_ms", "variables"]))
    snapshot = StateSnapshot(workflow_id, "run", 1, 1_700_000_000_000, {"x": 1})
    if case == "sequence":
        snapshot = dataclasses.replace(snapshot, sequence=draw(st.one_of(
            st.integers(-(2**63), -1), st.integers(v.MAX_SEQUENCE + 1, 2**63 - 1))))
        field = "sequence"
    elif case == "timestamp_ms":
        snapshot = dataclasses.replace(snapshot, timestamp_ms=draw(st.integers(-(2**63), -1)))
        field = "timestamp_ms"
    else:
        snapshot = dataclasses.replace(snapshot, variables={"x": draw(st.sampled_from(
            [math.nan, math.inf, -math.inf]))})
        field = "variables['x']"
    return Hostile(topics.STATE, workflow_id.encode(),
                   CODEC.encode("StateSnapshot", snapshot.to_avro()), workflow_id,
                   f"state {case}", field)


def _clean(workflow_id: str, count: int) -> bytes:
    events = [HistoryEvent(workflow_id, "run-1", "clean", seq, EventKind.STATE_UPDATED,
                           1_700_000_000_000 + seq, values={"step": seq})
              for seq in range(1, count + 1)]
    return CODEC.encode("HistoryEnvelope", {"workflow_id": workflow_id,
                                            "events": [e.to_avro() for e in events]})


class _Producer:
    def __init__(self, settings: Settings) -> None:
        self._producer = Producer({"bootstrap.servers": settings.broker, "linger.ms": 5,
                                   "partitioner": "murmur2_random"})
        self.landed: dict[int, tuple[str, int, int]] = {}

    def send(self, topic: str, key: bytes, value: bytes, tag: int) -> None:
        def delivered(error: object, message: object) -> None:
            assert error is None, error
            self.landed[tag] = (message.topic(), message.partition(),  # type: ignore[attr-defined]
                                message.offset())  # type: ignore[attr-defined]
        self._producer.produce(topic, value, key, on_delivery=delivered)
        self._producer.poll(0)

    def flush(self) -> None:
        assert self._producer.flush(30) == 0


def _clean_counts(settings: Settings, prefix: str) -> tuple[int, int, int]:
    (count, ids, raw), = connect(settings).execute(
        "SELECT count(), uniqExact(row_id), "
        "(SELECT count() FROM workflow_events WHERE startsWith(workflow_id, %(p)s)) "
        "FROM workflow_events FINAL WHERE startsWith(workflow_id, %(p)s)", {"p": prefix})
    return count, ids, raw


def _stored_workflows(settings: Settings, prefix: str) -> set[str]:
    rows = connect(settings).execute(
        "SELECT DISTINCT workflow_id FROM workflow_events WHERE startsWith(workflow_id, %(p)s) "
        "UNION ALL SELECT DISTINCT workflow_id FROM action_usage "
        "WHERE startsWith(workflow_id, %(p)s)", {"p": prefix})
    return {w for w, in rows}


TRIED: Counter[str] = Counter()
EXAMPLES = 3
PER_EXAMPLE = 30
CLEAN_EVENTS = 62


def test_hostile_records_never_stop_the_worker(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    run = uuid.uuid4().hex[:8]
    worker = worker_factory().start()
    producer = _Producer(settings)
    example = iter(range(1000))
    clean_total = 0
    all_clean_prefix = f"clean-{run}-"

    @settings_for_suite
    @given(data=st.data())
    def example_round(data: st.DataObject) -> None:
        nonlocal clean_total
        n = next(example)
        prefix = f"hostile-{run}-{n}-"
        clean_prefix = f"{all_clean_prefix}{n}-"
        # Topics in turn: hypothesis' one_of favours its first branch, and every input topic
        # must get its share.
        kinds = (hostile_history, hostile_telemetry, hostile_state)
        hostile = [data.draw(kinds[i % len(kinds)](prefix, i))
                   for i in range(PER_EXAMPLE)]
        for i, record in enumerate(hostile):
            TRIED[record.kind] += 1
            producer.send(record.topic, record.key, record.value, i)
            if i % 5 == 4:  # a clean workflow between every five hostile records
                workflow_id = f"{clean_prefix}{i}"
                producer.send(topics.HISTORY, workflow_id.encode(),
                              _clean(workflow_id, CLEAN_EVENTS), 10_000 + i)
                clean_total += CLEAN_EVENTS
        producer.flush()
        expected = (clean_total, clean_total)
        wait_for(lambda: _clean_counts(settings, all_clean_prefix)[:2] == expected,
                 timeout=90, what="every clean event stored once")
        assert worker.process is not None and worker.process.poll() is None

        refused = {i: r for i, r in enumerate(hostile) if r.field is not None}
        origin_of = {producer.landed[i]: i for i in refused}

        def letters() -> dict[int, DeadLetter] | None:
            found = {}
            for decoded in read_topic(settings, topics.DEADLETTER, idle_seconds=1.0):
                letter = DeadLetter.from_avro(decoded.record)
                i = origin_of.get((letter.topic, letter.partition, letter.offset))
                if i is not None:
                    found[i] = letter
            return found if found.keys() == refused.keys() else None

        try:
            found = wait_for(letters, timeout=60, what="a dead letter for every refused record")
        except AssertionError:
            seen = {(d.topic, d.partition, d.offset) for d in (
                DeadLetter.from_avro(x.record) for x in read_topic(settings, topics.DEADLETTER))}
            missing = [(r.kind, r.field, producer.landed[i]) for i, r in refused.items()
                       if producer.landed[i] not in seen]
            raise AssertionError(f"no dead letter for {missing}") from None
        for i, record in refused.items():
            assert f"invalid {record.field}:" in found[i].reason, (record, found[i].reason)
        accepted = {r.workflow_id for r in hostile
                    if r.field is None and r.topic != topics.STATE}
        if accepted:
            wait_for(lambda: accepted <= _stored_workflows(settings, prefix), timeout=60,
                     what="the in-range hostile records stored")
        refused_only = {r.workflow_id for r in refused.values()} - accepted
        assert not refused_only & _stored_workflows(settings, prefix)

    example_round()
    count, ids, _ = _clean_counts(settings, all_clean_prefix)
    assert count == ids == clean_total
    assert sum(TRIED.values()) == EXAMPLES * PER_EXAMPLE
    print(f"hostile records tried: {sum(TRIED.values())} {dict(sorted(TRIED.items()))}")

    # A restart reads whatever was not committed again: it must not crash on it.
    assert worker.stop() == 0
    restarted = worker_factory().start(timeout=90)
    workflow_id = f"{all_clean_prefix}after-restart"
    producer.send(topics.HISTORY, workflow_id.encode(), _clean(workflow_id, CLEAN_EVENTS), -1)
    producer.flush()
    clean_total += CLEAN_EVENTS
    wait_for(lambda: _clean_counts(settings, all_clean_prefix)[:2] == (clean_total, clean_total),
             timeout=90, what="a clean workflow stored after the restart")
    assert restarted.process is not None and restarted.process.poll() is None
    status, body = http("GET", f"http://{settings.web_host}:{restarted.settings.web_port}"
                               f"/shadow/{workflow_id}/state")
    assert status == 200 and body["sequence"] == CLEAN_EVENTS, body
    assert restarted.stop() == 0


settings_for_suite = hypothesis_settings(
    max_examples=EXAMPLES, deadline=None, phases=[Phase.generate], database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example])
