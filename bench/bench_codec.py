"""Codec throughput: encode and decode, one event per message and 500 per envelope.

Reference, measured in the same run: fastavro's own schemaless writer and reader on the same
records (no header, no checks, no typed records), so the codec's overhead reads as a ratio.
    .venv/bin/python bench/bench_codec.py
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastavro

from bench._common import best_time, sample_events
from schemas.codec import default_codec
from schemas.records import history_events

N = 30_000
PER_ENVELOPE = 500


def main() -> None:
    codec = default_codec()
    events = sample_events("wf-bench", N)
    records = [e.to_avro() for e in events]
    envelopes = [{"workflow_id": "wf-bench", "events": records[i:i + PER_ENVELOPE]}
                 for i in range(0, N, PER_ENVELOPE)]
    schema = codec.record_type("HistoryEvent").schema
    env_schema = codec.record_type("HistoryEnvelope").schema

    def raw_write(items, s) -> list[bytes]:
        out = []
        for item in items:
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, s, item)
            out.append(buffer.getvalue())
        return out

    raw_single = raw_write(records, schema)
    raw_env = raw_write(envelopes, env_schema)
    single = [codec.encode("HistoryEvent", r) for r in records]
    enveloped = [codec.encode("HistoryEnvelope", e) for e in envelopes]

    rows = [
        ("encode, 1 event/message", best_time(lambda: [codec.encode("HistoryEvent", r)
                                                        for r in records]),
         best_time(lambda: raw_write(records, schema))),
        ("encode, 500 events/envelope", best_time(lambda: [codec.encode("HistoryEnvelope", e)
                                                            for e in envelopes]),
         best_time(lambda: raw_write(envelopes, env_schema))),
        ("decode, 1 event/message", best_time(lambda: [codec.decode(m) for m in single]),
         best_time(lambda: [fastavro.schemaless_reader(io.BytesIO(m), schema, None)
                             for m in raw_single])),
        ("decode, 500 events/envelope", best_time(lambda: [codec.decode(m)
                                                            for m in enveloped]),
         best_time(lambda: [fastavro.schemaless_reader(io.BytesIO(m), env_schema, None)
                             for m in raw_env])),
        ("decode + typed records, envelope",
         best_time(lambda: [history_events(codec.decode(m)) for m in enveloped]),
         best_time(lambda: [fastavro.schemaless_reader(io.BytesIO(m), env_schema, None)
                             for m in raw_env])),
    ]
    print(f"codec, {N} HistoryEvents ({len(single[0])} bytes each alone)")
    print(f"{'case':<34} {'events/s':>12} {'fastavro ref/s':>15} {'time ours/ref':>14}")
    for name, ours, ref in rows:
        print(f"{name:<34} {N / ours:>12,.0f} {N / ref:>15,.0f} {ours / ref:>14.2f}")


if __name__ == "__main__":
    main()
