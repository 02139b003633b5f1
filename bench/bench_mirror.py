"""Mirror benchmarks: engine throughput, vectorised comparisons, promotion against full replay,
and precision/recall of anomaly detection on a generated fault-injection stream.

Each speed figure comes with a reference measured in the same run:
- engine events/s against decoding the same events from Avro (the cost every event pays anyway);
- comparisons/s against a plain dict equality of the same state vectors;
- promotion against a full replay of the same history.
    .venv/bin/python bench/bench_mirror.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import best_time
from schemas.codec import default_codec
from schemas.records import EventKind, HistoryEvent, history_events
from streams.mirror.changelog import next_record
from streams.mirror.definitions import DEFAULT, DefinitionRegistry
from streams.mirror.deviation import Comparison, score_many
from streams.mirror.registry import Mirrors
from streams.mirror.run import RunMirror, rebuild
from streams.traces.detection import score_detection
from streams.traces.faulty_primary import FAULT_KINDS, FaultPlan, simulate
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "wfinstances"
FILES = sorted(TRACES.glob("*/*/*.json")) + sorted(TRACES.glob("nextflow/*.json"))


def engine() -> None:
    histories = [history_from_trace(load_wfformat(p), f"wf-{i}", "r", 0)
                 for i, p in enumerate(FILES)]
    events = sum(len(h) for h in histories)
    codec = default_codec()
    messages = [codec.encode("HistoryEnvelope", {"workflow_id": h[0].workflow_id,
                                                 "events": [e.to_avro() for e in h]})
                for h in histories]
    mirror_s = best_time(lambda: [rebuild(h, DEFAULT) for h in histories])
    decode_s = best_time(lambda: [history_events(codec.decode(m)) for m in messages])
    print(f"mirror engine: {events} events of {len(histories)} shared-trace runs, one core")
    print(f"  {'mirror apply (dedupe, order, state)':<38} {events / mirror_s:>12,.0f} events/s")
    print(f"  {'Avro decode + typed records (ref)':<38} {events / decode_s:>12,.0f} events/s")


def comparisons() -> None:
    rng = random.Random(1)
    pairs = []
    for i in range(5_000):
        state = {f"action.a{j}": "COMPLETED" for j in range(250)}
        state.update({f"var{j}": rng.random() for j in range(50)})
        primary = dict(state)
        if i % 10 == 0:  # one in ten deviates
            primary["var3"] = primary["var3"] + 1
            primary["action.a7"] = "FAILED"
        pairs.append(Comparison(primary, state, DEFAULT))
    ours = best_time(lambda: score_many(pairs))
    reference = best_time(lambda: [p.primary == p.mirror for p in pairs])
    print(f"comparisons: {len(pairs)} pairs of 300-variable state vectors, 10% deviating")
    print(f"  {'score_many (vectorised)':<38} {len(pairs) / ours:>12,.0f} comparisons/s")
    print(f"  {'dict equality only (ref)':<38} {len(pairs) / reference:>12,.0f} comparisons/s")


def _long_history(length: int) -> list[HistoryEvent]:
    # A long-running workflow: a bounded state (100 variables, 50 recurring actions) updated by
    # many events, as an entity workflow's history grows towards Temporal's limit.
    kinds = (EventKind.ACTION_SCHEDULED, EventKind.ACTION_STARTED, EventKind.ACTION_COMPLETED,
             EventKind.STATE_UPDATED)
    events = [HistoryEvent("long", "r", "entity", 1, EventKind.WORKFLOW_STARTED, 0)]
    for seq in range(2, length + 1):
        kind = kinds[seq % 4]
        events.append(HistoryEvent(
            "long", "r", "entity", seq, kind, seq, action_id=f"act{(seq // 4) % 50}",
            action_type="step", values={f"v{seq % 100}": seq} if kind in (
                EventKind.STATE_UPDATED, EventKind.ACTION_COMPLETED) else {}))
    return events


def promotion() -> None:
    print("promotion against full replay (bounded state, snapshots as the worker takes them)")
    print(f"  {'events':>8} {'tail':>5} {'promote ms':>11} {'full replay ms':>15} "
          f"{'replay/promote':>15}")
    for length in (1_000, 10_000, 51_200):
        events = _long_history(length)
        mirror = RunMirror("long", "r", "entity")
        # Batches of 500 with a record after each, as the agent does; the last 500 events
        # come after the last record: the tail promotion hands over with the state.
        cut = length - 500
        for start in range(0, cut, 500):
            for event in events[start:min(start + 500, cut)]:
                mirror.offer(event, DEFAULT)
            next_record(mirror)
        for event in events[cut:]:
            mirror.offer(event, DEFAULT)

        def promote(m: RunMirror = mirror) -> str:
            # What POST /promote serializes: the state and the events since the snapshot.
            return json.dumps({"variables": m.variables, "sequence": m.sequence,
                               "events": [e.to_avro() for e in m.since_snapshot]})

        promote_s = best_time(promote, 5)
        replay_s = best_time(lambda ev=events: rebuild(ev, DEFAULT), 3)
        print(f"  {length:>8} {len(mirror.since_snapshot):>5} {promote_s * 1000:>11.3f} "
              f"{replay_s * 1000:>15.1f} "
              f"{replay_s / promote_s:>15.0f}x")


def detection(runs_per_trace: int = 2, seed: int = 11) -> None:
    rng = random.Random(seed)
    registry = DefinitionRegistry()
    mirrors = Mirrors(registry)
    faults, findings = [], []
    snapshot_every = 10
    runs = []
    for i, path in enumerate(FILES * runs_per_trace):
        events = history_from_trace(load_wfformat(path), f"wf-{i}", "r", 1_700_000_000_000)
        kinds = rng.sample(FAULT_KINDS, rng.randint(0, 2))
        runs.append(simulate(events, registry.get(events[0].workflow_type),
                             FaultPlan(kinds, duplicate_deliveries=10, reorder_distance=5),
                             snapshot_every=snapshot_every, seed=i))
    for run in runs:
        faults += run.faults
        for event in run.history:
            findings += mirrors.offer(event, 0, now_ms=0)
        for n, snapshot in enumerate(run.snapshots):
            mirrors.await_comparison(snapshot, 0, (snapshot.workflow_id, n))
        findings += mirrors.compare_ready()[0]
    findings += mirrors.expire(10**12)[0]
    findings += mirrors.compare_ready()[0]

    score = score_detection(faults, [(f.workflow_id, f.sequence) for f in findings],
                            window=snapshot_every)
    print(f"detection: {len(runs)} runs of the shared traces, {score.faults} injected faults, "
          "10 duplicate deliveries and reordering within 5 places per run")
    print(f"  anomalies {score.anomalies}, precision {score.precision:.3f}, "
          f"recall {score.recall:.3f}")
    for kind, (injected, detected) in sorted(score.by_kind.items()):
        print(f"    {kind:<24} {detected}/{injected} caught")


if __name__ == "__main__":
    engine()
    comparisons()
    promotion()
    detection()
