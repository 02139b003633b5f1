"""A simulated primary: the state a workflow engine would report for a run, with faults injected
on purpose so that detection can be scored.

The primary applies its history with the same rules as the mirror (the state-vector contract)
and reports a snapshot every ``snapshot_every`` events and at the end. Faults:

- ``corrupt_variable``: one snapshot reports a wrong value for a variable;
- ``missing_variable``: one snapshot lacks a variable the primary holds;
- ``dropped_event``: an event the primary applied never reaches the history topic;
- ``duplicated_side_effect``: the primary applies an action's effect twice.

Harmless noise the mirror must absorb without an anomaly: ``duplicate_delivery`` (an event
published twice) and bounded reordering of the published history.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.records import EventKind, HistoryEvent, StateSnapshot
from streams.mirror.definitions import WorkflowDefinition
from streams.mirror.run import RunMirror, apply_effect

FAULT_KINDS = ("corrupt_variable", "missing_variable", "dropped_event",
               "duplicated_side_effect")


@dataclass(frozen=True)
class Fault:
    """One injected fault: where, and what kind."""

    workflow_id: str
    run_id: str
    sequence: int
    kind: str

    def to_json(self) -> dict[str, object]:
        """The fault as one line of the faults file."""
        return {"workflow_id": self.workflow_id, "run_id": self.run_id,
                "sequence": self.sequence, "kind": self.kind}


@dataclass
class PrimaryRun:
    """What a (possibly faulty) primary published for one run."""

    history: list[HistoryEvent] = field(default_factory=list)
    snapshots: list[StateSnapshot] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


@dataclass(frozen=True)
class FaultPlan:
    """How many faults of each kind to inject in a run, and how much harmless noise."""

    faults: Sequence[str] = ()
    duplicate_deliveries: int = 0
    reorder_distance: int = 0


def simulate(events: Sequence[HistoryEvent], definition: WorkflowDefinition,
             plan: FaultPlan = FaultPlan(), snapshot_every: int = 10,
             seed: int = 0) -> PrimaryRun:
    """The history and snapshots a primary publishes for ``events`` (one run, in order)."""
    rng = random.Random(seed)
    out = PrimaryRun()
    if not events:
        return out
    first = events[0]
    primary = RunMirror(first.workflow_id, first.run_id, first.workflow_type)
    snapshot_at = {e.sequence for e in events[snapshot_every - 1::snapshot_every]}
    snapshot_at.add(events[-1].sequence)
    chosen = _place_faults(plan.faults, events, sorted(snapshot_at), rng)
    for event in events:
        primary.offer(event, definition)
        kind = chosen.get(event.sequence)
        if kind == "dropped_event":
            out.faults.append(Fault(first.workflow_id, first.run_id, event.sequence, kind))
        else:
            out.history.append(event)
        if kind == "duplicated_side_effect":
            apply_effect(primary, event, definition)
            out.faults.append(Fault(first.workflow_id, first.run_id, event.sequence, kind))
        if event.sequence in snapshot_at:
            variables = dict(primary.variables)
            if kind in ("corrupt_variable", "missing_variable"):
                name = rng.choice(sorted(variables))
                if kind == "missing_variable":
                    del variables[name]
                else:
                    variables[name] = _corrupted(variables[name])
                out.faults.append(Fault(first.workflow_id, first.run_id, event.sequence, kind))
            out.snapshots.append(StateSnapshot(first.workflow_id, first.run_id, event.sequence,
                                               event.timestamp_ms, variables))
    out.history = _noisy(out.history, plan, rng)
    return out


def _place_faults(kinds: Sequence[str], events: Sequence[HistoryEvent],
                  snapshot_sequences: list[int], rng: random.Random) -> dict[int, str]:
    # One fault per sequence; snapshot faults on snapshot sequences, event faults on action
    # events (a dropped WORKFLOW_STARTED would leave nothing to compare).
    actions = [e.sequence for e in events
               if e.kind in (EventKind.ACTION_COMPLETED, EventKind.ACTION_STARTED)]
    chosen: dict[int, str] = {}
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        pool = snapshot_sequences if kind in ("corrupt_variable", "missing_variable") else actions
        free = [s for s in pool if s not in chosen]
        if free:
            chosen[rng.choice(free)] = kind
    return chosen


def _corrupted(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if value is None:
        return "corrupted"
    return f"{value}~corrupted"


def _noisy(history: list[HistoryEvent], plan: FaultPlan,
           rng: random.Random) -> list[HistoryEvent]:
    noisy = list(history)
    for _ in range(plan.duplicate_deliveries):
        noisy.insert(rng.randrange(len(noisy) + 1), rng.choice(history))
    if plan.reorder_distance:
        keyed = [(i + rng.uniform(0, plan.reorder_distance), e) for i, e in enumerate(noisy)]
        noisy = [e for _, e in sorted(keyed, key=lambda pair: pair[0])]
    return noisy
