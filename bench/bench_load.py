"""Load: the mix live engines publish (history envelopes, telemetry batches and the primary's
state snapshots of many concurrent workflows, made by ``shadowflow replay``'s generator from the
shared traces) through one worker and through two, against do-nothing Faust agents on the same
topics in the same run; then the reservation latency at a fixed offered load of the same mix.

Throughput: ``WORKFLOWS`` runs of the shared WfFormat traces, each cut to the first half of its
history (with the snapshots and telemetry due by then), so every run is still active at the end;
history in envelopes of what a run emitted per minute of trace time (about 50 events, as issue 12
asks). Pre-produced; each consumer is timed from its first "Ready" log line to every message of
the three topics committed (a worker commits an offset only once the effects of its events are
stored). RSS (``/proc/<pid>/status``) is read when a worker is ready and again once all is
committed; the growth, divided by the runs it holds, gives the memory per 10k active workflows.
Once the single worker is done, it is sent telemetry alone for 2,000 of the actions still running
(20 batches of 100 samples per action, 100 batches per message) and timed from the first send to all
committed, against the do-nothing agents' messages/s of the mix (issue 12 compares telemetry
samples/s with a do-nothing agent's single-message rate). Each worker count runs on a stack of its
own, from empty. Also printed: the longest the group
went without committing anything new while input was waiting (a stall, such as the 35 s one issue
12 describes, shows there), and the CPU seconds the workers, the broker and ClickHouse used
(``/proc/<pid>/stat``) from ready to done: all share this machine's cores, so the single
worker's run bounds what more workers can gain: at most ``cores x seconds / CPU seconds used``.
The two workers' ratio is printed twice: timed from the first "Ready", and from the last (the
messages committed after it over the time after it), which leaves out the second the last worker
waits for its partitions.

Latency: one worker, the full histories of the same runs, published as ``shadowflow replay``
does (a message per run and 50 ms of trace time) at ``EVENTS_PER_SECOND`` history events/s for
``SECONDS``; from each ``ACTION_SCHEDULED`` sent to its RESERVE/ADJUST on
``shadow.reservations``.

    .venv/bin/python bench/bench_load.py [WORKFLOWS] [EVENTS_PER_SECOND] [SECONDS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    bench_stack,
    command_key,
    follow_keys,
    percentiles,
    processed_at,
    ready_at,
    reference_seconds,
    warm_publisher,
)
from infra.stack import LocalStack
from schemas.records import EventKind, HistoryEvent, StateSnapshot, TelemetryBatch
from streams.runtime.kafka import Publisher
from streams.traces.formats import load_trace
from streams.traces.playback import Item, ReplayPlan, plan_replay
from topology import topics
from topology.evaluate import trace_files
from topology.replay import publish_plan, send_message, tick_messages, ticks
from topology.settings import Settings
from topology.worker import prepare
from topology.worker_process import WorkerProcess

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "wfinstances"
SOURCES = (topics.HISTORY, topics.TELEMETRY, topics.STATE)
ENVELOPE_TICK_MS = 60_000
TELEMETRY_ACTIONS = 2_000
TELEMETRY_BATCHES = 20
TELEMETRY_SAMPLES = 100
LOGS = Path(tempfile.mkdtemp(prefix="shadowflow-bench-logs-"))


def first_halves(plan: ReplayPlan) -> ReplayPlan:
    """Each run of ``plan`` cut to the first half of its history events, with the snapshots
    (of sequences in that half) and telemetry due by its last kept event."""
    total = Counter(item.workflow_id for item in plan.items if item.kind == "history")
    kept: Counter[str] = Counter()
    last: dict[str, HistoryEvent] = {}
    items: list[Item] = []
    for item in plan.items:
        run = item.workflow_id
        if item.kind == "history" and kept[run] < total[run] // 2:
            kept[run] += 1
            last[run] = item.payload  # type: ignore[assignment]
            items.append(item)
    cut = set(id(item) for item in items)
    for item in plan.items:
        end = last.get(item.workflow_id)
        if id(item) in cut or end is None or item.due_ms > end.timestamp_ms:
            continue
        if isinstance(item.payload, StateSnapshot) and item.payload.sequence > end.sequence:
            continue
        if item.kind != "history":
            items.append(item)
    items.sort(key=lambda item: item.due_ms)  # stable: publication order kept within a time
    return ReplayPlan(items=items, workflows=plan.workflows)


def _rss_bytes(worker: WorkerProcess) -> int:
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


def _cpu_seconds(pid: int | None) -> float:
    """User and system CPU seconds a process and its live descendants have used (ClickHouse
    may run under a watchdog parent); 0 for one not running."""
    stats: dict[int, list[str]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(path.parent.name)] = path.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
    tree, todo = set(), [pid] if pid in stats else []
    while todo:
        tree.add(current := todo.pop())
        todo += [child for child, fields in stats.items() if int(fields[1]) == current]
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree)
    return ticks / os.sysconf("SC_CLK_TCK")


def _start_together(workers: list[WorkerProcess]) -> tuple[dict[int, int], dict[int, float]]:
    """Start the workers at once (each joining the group while the others do); RSS and CPU
    seconds of each as soon as it is ready, by index."""
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    failures: list[BaseException] = []

    def start(index: int) -> None:
        try:
            workers[index].start(180)
            rss[index] = _rss_bytes(workers[index])
            cpu[index] = _cpu_seconds(_pid(workers[index]))
        except BaseException as exc:  # surfaced below, in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return rss, cpu


def _pid(worker: WorkerProcess) -> int:
    assert worker.process is not None
    return worker.process.pid


def _stack_cpu(settings: Settings) -> dict[str, float]:
    """CPU seconds used so far by each service of the stack (broker, ClickHouse)."""
    return {s.name: _cpu_seconds(s.pid) for s in LocalStack(settings).status()}


def _throughput(settings: Settings, plan: ReplayPlan, count: int) -> dict[str, float]:
    """Publish ``plan``, time the do-nothing agents and ``count`` workers on it."""
    prepare(settings)
    sent = publish_plan(settings, plan, progress=False, tick_ms=ENVELOPE_TICK_MS)
    produced = {topic: sent.get(topic, 0) for topic in SOURCES}
    messages = sum(produced.values())
    reference = reference_seconds(settings, messages, LOGS / f"noop-{count}.log", SOURCES)
    group = f"bench-load-{count}"
    workers = [WorkerProcess(settings.with_overrides(app_id=group, web_port=39600 + i),
                             LOGS / f"load-{count}-{i}.log") for i in range(count)]
    try:
        stack_before = _stack_cpu(settings)
        at_ready, cpu_at_ready = _start_together(workers)
        done = processed_at(settings, group, produced, poll_seconds=0.2)
        cpu = {"workers": sum(_cpu_seconds(_pid(w)) - cpu_at_ready[i]
                              for i, w in enumerate(workers))}
        cpu |= {name: used - stack_before[name] for name, used in _stack_cpu(settings).items()}
        growth = sum(_rss_bytes(w) - at_ready[i] for i, w in enumerate(workers))
        seconds = done.at - min(ready_at(w) for w in workers)
        # Once every worker consumes: the rate without the start's stagger (the last worker
        # is assigned its partitions about a second after the first).
        last_ready = max(ready_at(w) for w in workers)
        steady = (messages - done.committed_by(last_ready)) / max(done.at - last_ready, 1e-9)
        telemetry = _telemetry_alone(settings, group, plan, produced) if count == 1 else {}
    finally:
        for worker in workers:
            worker.stop()
    return {**telemetry, "seconds": seconds, "reference": reference, "messages": messages,
            "history": sent.get("history", 0), "telemetry": sent.get("telemetry", 0),
            "state": sent.get("state", 0), "rss_growth": growth,
            "rss_end": sum(at_ready.values()) + growth, "pause": done.longest_pause,
            "cpu": cpu, "steady": steady}


def _in_flight(plan: ReplayPlan) -> list[HistoryEvent]:
    """The ``ACTION_STARTED`` events of ``plan`` whose action has not ended in it."""
    started: dict[tuple[str, str, int], HistoryEvent] = {}
    for item in plan.items:
        event = item.payload
        if not isinstance(event, HistoryEvent) or event.action_id is None:
            continue
        key = (event.workflow_id, event.action_id, event.attempt)
        if event.kind is EventKind.ACTION_STARTED:
            started[key] = event
        elif event.kind in (EventKind.ACTION_COMPLETED, EventKind.ACTION_FAILED):
            started.pop(key, None)
    return list(started.values())


def _telemetry_alone(settings: Settings, group: str, plan: ReplayPlan,
                     produced: dict[str, int]) -> dict[str, float]:
    """Once the worker has processed ``plan``: telemetry alone, for up to
    ``TELEMETRY_ACTIONS`` actions still running (so every batch finds its action),
    ``TELEMETRY_BATCHES`` batches of ``TELEMETRY_SAMPLES`` samples each, 100 batches per
    message, produced while the worker consumes. Seconds from the first send to all committed,
    and the samples."""
    actions = _in_flight(plan)[:TELEMETRY_ACTIONS]
    publisher = Publisher(settings)
    started = time.time()
    for event in actions:
        batches = []
        for b in range(TELEMETRY_BATCHES):
            first = event.timestamp_ms + b * TELEMETRY_SAMPLES * 1_000
            stamps = [first + i * 1_000 for i in range(TELEMETRY_SAMPLES)]
            batches.append(TelemetryBatch(
                event.workflow_id, event.run_id, event.action_id or "", event.action_type,
                event.attempt, stamps, [1.0] * TELEMETRY_SAMPLES,
                [2**30 + i for i in range(TELEMETRY_SAMPLES)], [4_096] * TELEMETRY_SAMPLES,
                [1e-6] * TELEMETRY_SAMPLES))
        publisher.send_telemetry(batches, per_message=100)
    publisher.flush(300)
    sent = time.time() - started
    total = {**produced, topics.TELEMETRY: produced[topics.TELEMETRY]
             + publisher.sent_to[topics.TELEMETRY]}
    done = processed_at(settings, group, total, poll_seconds=0.2)
    return {"telemetry_alone_samples": len(actions) * TELEMETRY_BATCHES * TELEMETRY_SAMPLES,
            "telemetry_alone_messages": publisher.sent_to[topics.TELEMETRY],
            "telemetry_alone_seconds": done.at - started, "telemetry_alone_sent": sent}


def _latency(settings: Settings, plan: ReplayPlan, rate: float, seconds: float) -> list[float]:
    """Offer ``plan``'s messages at ``rate`` history events/s for ``seconds`` to one worker;
    ms from each ``ACTION_SCHEDULED`` sent to its command seen."""
    prepare(settings)
    worker = WorkerProcess(settings.with_overrides(app_id="bench-load-latency"),
                           LOGS / "load-latency.log").start(120)
    seen: dict[bytes, float] = {}
    sent: dict[bytes, float] = {}
    stop, ready = threading.Event(), threading.Event()
    follower = threading.Thread(target=follow_keys, args=(
        settings, topics.RESERVATIONS, seen, stop, ready, command_key))
    follower.start()
    try:
        ready.wait(10)
        time.sleep(2)  # let the assignment settle before measuring
        publisher = warm_publisher(settings)
        started = time.monotonic()
        events = 0
        for group in ticks(plan):
            if time.monotonic() - started >= seconds:
                break
            pause = started + events / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            for kind, items in tick_messages(group):
                now = time.time()
                for item in items:
                    event = item.payload
                    if isinstance(event, HistoryEvent):
                        events += 1
                        if event.kind is EventKind.ACTION_SCHEDULED:
                            sent.setdefault(f"{event.workflow_id}/{event.action_id}".encode(),
                                            now)
                send_message(publisher, kind, items)
        publisher.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen.keys() & sent.keys()) < len(sent):
            time.sleep(0.2)
    finally:
        stop.set()
        follower.join()
        worker.stop()
    return [(seen[k] - sent[k]) * 1000 for k in sent if k in seen]


def _report(count: int, r: dict[str, float], workflows: int, samples_per_batch: float) -> None:
    seconds, reference = r["seconds"], r["reference"]
    print(f"  {count} worker(s): {r['messages'] / seconds:8,.0f} msg/s "
          f"({reference / seconds:.3f}x the do-nothing agents' {r['messages'] / reference:,.0f})"
          f"; history {r['history'] / seconds / count:,.0f} events/s per worker "
          f"({r['history'] / seconds:,.0f} in all); telemetry "
          f"{r['telemetry'] * samples_per_batch / seconds:,.0f} samples/s; "
          f"{r['state'] / seconds:,.0f} snapshots/s; {seconds:.1f} s, longest without a new "
          f"commit {r['pause']:.1f} s")
    cores = os.cpu_count() or 1
    used = sum(r["cpu"].values())
    print("      CPU seconds used meanwhile: " + ", ".join(
        f"{name} {value:.1f}" for name, value in r["cpu"].items())
        + f" ({used / seconds:.2f} of {cores} cores); more workers can gain at most "
        f"{cores * seconds / used:.2f}x on this machine")
    if "telemetry_alone_seconds" in r:
        took = r["telemetry_alone_seconds"]
        print(f"      then telemetry alone: {r['telemetry_alone_samples']:,.0f} samples in "
              f"{r['telemetry_alone_messages']:,.0f} messages, {took:.1f} s (sent in "
              f"{r['telemetry_alone_sent']:.1f} s): "
              f"{r['telemetry_alone_samples'] / took:,.0f} samples/s, "
              f"{r['telemetry_alone_samples'] / took / (r['messages'] / reference):.1f}x the "
              f"do-nothing agents' messages/s")
    print(f"      RSS {r['rss_end'] / 2**20:,.0f} MiB at the end, grew "
          f"{r['rss_growth'] / 2**20:,.0f} MiB for {workflows} active runs of "
          f"{r['history'] / workflows:.0f} events: "
          f"{r['rss_growth'] / workflows * 10_000 / 2**20:,.0f} MiB per 10k")


def main() -> None:
    workflows = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    traces = [load_trace(p) for p in trace_files([str(TRACES)])]
    plan = plan_replay(traces, workflows, seed=0)
    half = first_halves(plan)
    batches = [i.payload for i in half.items if isinstance(i.payload, TelemetryBatch)]
    samples_per_batch = sum(len(b.timestamps_ms) for b in batches) / max(len(batches), 1)
    print(f"load: {workflows} active runs of {len(traces)} shared traces (first half of each), "
          f"4 partitions, history in envelopes per run and minute of trace time")
    results = {}
    for count in (1, 2):
        with bench_stack() as settings:
            results[count] = _throughput(settings, half, count)
        if count == 1:
            r = results[1]
            print(f"  offered: {r['history']:,.0f} history events, {r['telemetry']:,.0f} "
                  f"telemetry batches ({samples_per_batch:.1f} samples each), "
                  f"{r['state']:,.0f} snapshots in {r['messages']:,.0f} messages")
        _report(count, results[count], workflows, samples_per_batch)
    print(f"  two workers / one: {results[1]['seconds'] / results[2]['seconds']:.2f}x "
          f"the throughput; {results[2]['steady'] / results[1]['steady']:.2f}x once every worker "
          f"consumes ({results[1]['steady']:,.0f} and {results[2]['steady']:,.0f} msg/s from the "
          f"last worker's Ready)")
    with bench_stack() as settings:
        latencies = _latency(settings, plan, rate, seconds)
    print(f"  ACTION_SCHEDULED → command at {rate:,.0f} history events/s of the mix, one worker: "
          f"{percentiles(latencies)}")
    print(f"worker logs: {LOGS}")


if __name__ == "__main__":
    main()
