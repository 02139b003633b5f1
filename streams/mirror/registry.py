"""Every mirror a worker holds, the primary's snapshots waiting to be compared, and what the
comparisons find. Pure: callers pass the time and do the I/O.

A primary snapshot at sequence ``n`` is compared with the mirror's state at exactly ``n``: if the
mirror is behind, the snapshot waits (up to ``compare_wait_ms``) until it catches up; if it is
ahead, its undo log gives the state at ``n``. A run whose deviation stays the same from one
snapshot to the next (a lost event keeps the two sides apart by the same amount) is reported once:
a comparison is reported only when it holds a variable deviation not already reported for the run
since it last compared clean. A numeric deviation is "the same" when its amount is (a counter one
behind stays one behind as both sides grow); any other is the same only with the same two values,
so a new wrong value of an already deviating variable is reported.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.records import (
    HistoryEvent,
    StateSnapshot,
    anomaly_record,
    is_number,
    most_severe,
)
from streams.mirror.definitions import DefinitionRegistry, WorkflowDefinition
from streams.mirror.deviation import Comparison, VariableDeviation, score_many
from streams.mirror.run import Gap, MirrorLimits, RunMirror

RunKey = tuple[str, str]


@dataclass(frozen=True)
class Finding:
    """An anomaly found by the mirrors, before it is published."""

    kind: str  # STATE_DEVIATION or MISSING_EVENTS
    workflow_id: str
    run_id: str
    sequence: int
    score: float
    severity: str
    message: str
    variables: tuple[VariableDeviation, ...] = ()

    def to_avro(self, detected_ms: int) -> dict[str, Any]:
        """The ``Anomaly`` record."""
        return anomaly_record(
            kind=self.kind, severity=self.severity, workflow_id=self.workflow_id,
            run_id=self.run_id, sequence=self.sequence, score=self.score, message=self.message,
            detected_ms=detected_ms,
            variables=[{"name": v.name, "status": v.status, "primary": v.primary,
                        "mirror": v.mirror, "weight": v.weight,
                        "contribution": v.contribution} for v in self.variables])


def _signature(v: VariableDeviation) -> tuple[Any, ...]:
    if is_number(v.primary) and is_number(v.mirror):
        return (v.name, v.status, v.contribution)
    return (v.name, v.status, v.contribution, repr(v.primary), repr(v.mirror))


@dataclass
class _Waiting:
    snapshot: StateSnapshot
    received_ms: int
    token: Hashable


@dataclass
class CompareStats:
    """Counters of what became of the primary's snapshots."""

    compared: int = 0
    not_comparable: int = 0


@dataclass
class Mirrors:
    """The mirrors of the runs a worker owns."""

    definitions: DefinitionRegistry = field(default_factory=DefinitionRegistry)
    limits: MirrorLimits = field(default_factory=MirrorLimits)
    compare_wait_ms: int = 30_000
    runs: dict[RunKey, RunMirror] = field(default_factory=dict)
    partition_of: dict[RunKey, int] = field(default_factory=dict)
    latest_run: dict[str, str] = field(default_factory=dict)
    finished_at: dict[RunKey, int] = field(default_factory=dict)
    """Processing time at which each finished run was seen finished (or restored)."""
    _finish_order: deque[tuple[int, RunKey]] = field(default_factory=deque)
    """``finished_at`` in the order it was set: eviction looks at the front only."""
    _held_back: set[RunKey] = field(default_factory=set)
    """Runs due for eviction that a waiting primary snapshot still needs."""
    waiting: dict[RunKey, list[_Waiting]] = field(default_factory=dict)
    stats: CompareStats = field(default_factory=CompareStats)
    _reported: dict[RunKey, set[tuple[Any, ...]]] = field(default_factory=dict)

    def definition(self, mirror: RunMirror) -> WorkflowDefinition:
        """The definition that applies to a run."""
        return self.definitions.get(mirror.workflow_type)

    def mirror_of(self, workflow_id: str) -> RunMirror | None:
        """The mirror of a workflow's latest run, if held."""
        run_id = self.latest_run.get(workflow_id)
        return None if run_id is None else self.runs.get((workflow_id, run_id))

    def offer(self, event: HistoryEvent, partition: int, now_ms: int) -> list[Finding]:
        """Apply one history event to its run's mirror (made on first sight)."""
        key = (event.workflow_id, event.run_id)
        mirror = self.runs.get(key)
        if mirror is None:
            mirror = self.runs[key] = RunMirror(event.workflow_id, event.run_id,
                                                event.workflow_type, self.limits)
            self.partition_of[key] = partition
            self.latest_run[event.workflow_id] = event.run_id
        definition = self.definition(mirror)
        gaps = mirror.offer(event, definition, now_ms)
        if mirror.finished and key not in self.finished_at:
            self._mark_finished(key, now_ms)
        return [self._missing(mirror, gap, definition) for gap in gaps]

    def await_comparison(self, snapshot: StateSnapshot, now_ms: int, token: Hashable) -> None:
        """Queue a primary snapshot for comparison; ``token`` comes back when it is done."""
        key = (snapshot.workflow_id, snapshot.run_id)
        self.waiting.setdefault(key, []).append(_Waiting(snapshot, now_ms, token))

    def compare_ready(self) -> tuple[list[Finding], list[Hashable]]:
        """Compare every waiting snapshot whose run's mirror has reached its sequence, in one
        vectorised pass. Returns the findings and the tokens of the snapshots done."""
        batch: list[tuple[RunKey, _Waiting, dict[str, Any], WorkflowDefinition]] = []
        done: list[Hashable] = []
        for key, queue in list(self.waiting.items()):
            mirror = self.runs.get(key)
            if mirror is None:
                continue
            keep = []
            for item in queue:
                if item.snapshot.sequence > mirror.sequence:
                    keep.append(item)
                    continue
                state = mirror.state_at(item.snapshot.sequence)
                if state is None:
                    self.stats.not_comparable += 1
                    done.append(item.token)
                else:
                    batch.append((key, item, state, self.definition(mirror)))
            self._requeue(key, keep)
        deviations = score_many([Comparison(item.snapshot.variables, state, definition)
                                 for _, item, state, definition in batch])
        findings: list[Finding] = []
        # Sequence order per run, so "the same deviation as last time" means the previous one.
        order = sorted(range(len(batch)),
                       key=lambda i: (batch[i][0], batch[i][1].snapshot.sequence))
        for i in order:
            key, item, _, _ = batch[i]
            deviation = deviations[i]
            self.stats.compared += 1
            done.append(item.token)
            if not deviation.anomalous:
                self._reported.pop(key, None)
                continue
            reported = self._reported.setdefault(key, set())
            signature = {_signature(v) for v in deviation.variables}
            new = signature - reported
            if not new:
                continue
            reported |= new
            names = ", ".join(sorted({item[0] for item in new})[:5])
            findings.append(Finding(
                "STATE_DEVIATION", key[0], key[1], item.snapshot.sequence, deviation.score,
                deviation.severity, f"primary and mirror differ at sequence "
                f"{item.snapshot.sequence} in {len(deviation.variables)} variables, newly: {names}",
                deviation.variables))
        return findings, done

    def expire(self, now_ms: int) -> tuple[list[Finding], list[Hashable]]:
        """Timer work: declare gaps open too long, give up on snapshots the mirror never
        reached. Returns findings and the tokens of snapshots given up."""
        findings: list[Finding] = []
        for mirror in list(self.runs.values()):
            if mirror.pending:
                definition = self.definition(mirror)
                for gap in mirror.expire(now_ms, definition):
                    findings.append(self._missing(mirror, gap, definition))
        done: list[Hashable] = []
        for key, queue in list(self.waiting.items()):
            keep = []
            mirror = self.runs.get(key)
            reached = mirror.sequence if mirror else 0
            for item in queue:
                # Reached (perhaps by the gap just declared): compare_ready will compare it.
                if (item.snapshot.sequence <= reached or
                        now_ms - item.received_ms <= self.compare_wait_ms):
                    keep.append(item)
                    continue
                done.append(item.token)
                if mirror is None or not mirror.pending:
                    findings.append(Finding(
                        "MISSING_EVENTS", key[0], key[1], reached + 1,
                        float(item.snapshot.sequence - reached), "HIGH",
                        f"the primary reported sequence {item.snapshot.sequence} but the mirror "
                        f"has only {reached} events after {self.compare_wait_ms} ms"))
            self._requeue(key, keep)
        return findings, done

    def evict_finished(self, now_ms: int, retention_ms: int) -> dict[RunKey, RunMirror]:
        """Forget finished runs ``retention_ms`` after they finished, once nothing waits on
        them. Returns the mirrors forgotten. Costs O(1) amortised per run evicted: runs are taken
        from the front of the order they finished in, and only the few held back by a waiting
        snapshot (for at most ``compare_wait_ms``) are looked at again."""
        due = list(self._held_back)
        self._held_back.clear()
        queue = self._finish_order
        while queue and now_ms - queue[0][0] > retention_ms:
            at, key = queue.popleft()
            if self.finished_at.get(key) == at:  # else forgotten, or finished again since
                due.append(key)
        gone = {}
        for key in due:
            mirror = self.runs.get(key)
            if mirror is None:
                continue
            if self.waiting.get(key):
                self._held_back.add(key)
            else:
                self._forget(key)
                gone[key] = mirror
        return gone

    def load(self, mirrors: dict[RunKey, RunMirror], partition: int, now_ms: int) -> None:
        """Take over restored mirrors of one partition. A restored run that had finished is
        evicted ``retention`` after ``now_ms``, as if it had finished then."""
        for key, mirror in mirrors.items():
            self.runs[key] = mirror
            self.partition_of[key] = partition
            self.latest_run[key[0]] = key[1]
            if mirror.finished:
                self._mark_finished(key, now_ms)

    def drop_partitions(self, partitions: Iterable[int]) -> list[Hashable]:
        """Forget the runs of partitions this worker no longer owns; returns the tokens of their
        waiting snapshots (not compared: the new owner will consume them again)."""
        dropped = set(partitions)
        tokens: list[Hashable] = []
        for key in [k for k, p in self.partition_of.items() if p in dropped]:
            tokens.extend(item.token for item in self.waiting.get(key, ()))
            self._forget(key)
        return tokens

    def _mark_finished(self, key: RunKey, now_ms: int) -> None:
        self.finished_at[key] = now_ms
        self._finish_order.append((now_ms, key))

    def _forget(self, key: RunKey) -> None:
        self.runs.pop(key, None)
        self.partition_of.pop(key, None)
        self.finished_at.pop(key, None)
        self._held_back.discard(key)
        self.waiting.pop(key, None)
        self._reported.pop(key, None)
        if self.latest_run.get(key[0]) == key[1]:
            del self.latest_run[key[0]]

    def _requeue(self, key: RunKey, keep: list[_Waiting]) -> None:
        if keep:
            self.waiting[key] = keep
        else:
            self.waiting.pop(key, None)

    @staticmethod
    def _missing(mirror: RunMirror, gap: Gap, definition: WorkflowDefinition) -> Finding:
        count = gap.last - gap.first + 1
        score = definition.missing_weight * count
        severity = most_severe(definition.severity_of(score, False), "HIGH")
        return Finding("MISSING_EVENTS", mirror.workflow_id, mirror.run_id, gap.first, score,
                       severity, f"events {gap.first}..{gap.last} of the run never arrived and "
                       "were skipped")
