"""Shadow workflows: each running workflow's actions, what was forecast and reserved for them, what
they really used, and what comes next. Pure: callers pass the time and publish the effects.

- A shadow is made when a workflow starts (its ``WORKFLOW_STARTED`` event, or the API).
- When an action is scheduled it is forecast (memory, CPU, network, cost) and reserved. A forecast
  whose confidence is below the threshold falls back to a historical percentile; with no history
  at all the reservation says ``MANUAL`` and an alert asks for sizing (the seed's
  allocateResources).
- Ahead of time: when a run starts or an action completes, the action types likely to be scheduled
  next (learned per workflow type from the transitions of past runs) are reserved under a
  placeholder; the real action claims it when scheduled, so its lead time runs from the
  placeholder's reservation.
- Telemetry is folded into each action's usage (peak and mean CPU and memory, network bytes, cost)
  and into tumbling windows for the time-series table.
- Feedback (the usage at the action's end, or given through the API) is scored against the
  forecast, teaches the forecaster, and a large miss raises an alert.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.records import RESOURCE_CLASSES, EventKind, HistoryEvent
from streams.forecasting.forecaster import HISTORICAL, MANUAL, MODEL, Forecast, Forecaster
from streams.forecasting.sizing import TaskContext
from streams.shadow.outcomes import (
    FORECAST_RESOURCE,
    TRANSITION,
    Seen,
    observations,
    outcome_key,
    transition_outcome,
    usage_outcome,
)
from streams.shadow.pool import (
    Alert,
    Command,
    Reservation,
    ReservationPool,
    placeholder_id,
    reservation_id,
)


@dataclass(slots=True)
class Usage:
    """What an action used, folded from telemetry samples."""

    samples: int = 0
    peak_memory_bytes: float = 0.0
    sum_memory_bytes: float = 0.0
    peak_cpu_cores: float = 0.0
    sum_cpu_cores: float = 0.0
    network_bytes: float = 0.0
    cost: float = 0.0

    def add(self, memory: Sequence[float], cpu: Sequence[float], network: Sequence[float],
            cost: Sequence[float]) -> None:
        """Fold a batch of samples in."""
        if memory:
            self.peak_memory_bytes = max(self.peak_memory_bytes, max(memory))
            self.sum_memory_bytes += sum(memory)
        if cpu:
            self.peak_cpu_cores = max(self.peak_cpu_cores, max(cpu))
            self.sum_cpu_cores += sum(cpu)
        self.network_bytes += sum(network)
        self.cost += sum(cost)
        self.samples += max(len(memory), len(cpu))

    def actual(self) -> dict[str, float]:
        """The figures the forecast is judged on: peak memory, mean CPU, total network and cost."""
        return {"memory_bytes": self.peak_memory_bytes,
                "cpu_cores": self.sum_cpu_cores / self.samples if self.samples else 0.0,
                "network_bytes": self.network_bytes, "cost": self.cost}


@dataclass(slots=True)
class Prediction:
    """What was forecast for an action (or a likely next action), per resource."""

    action_id: str
    action_type: str
    forecasts: dict[str, Forecast]
    allocation: dict[str, float]
    source: str
    confidence: float
    reservation_id: str | None
    issued_ms: int
    likely: bool = False
    """A placeholder for an action not scheduled yet."""
    issued_event_ms: int | None = None
    """Event time of what caused the reservation (the scheduling, or for a placeholder the
    completion or run start before it): lead times are measured in the workflow's own time."""

    def to_json(self) -> dict[str, object]:
        """The prediction route's answer."""
        return {"action_id": self.action_id, "action_type": self.action_type,
                "allocation": self.allocation, "confidence": round(self.confidence, 4),
                "source": self.source, "reservation_id": self.reservation_id,
                "issued_ms": self.issued_ms, "predicted_next": self.likely,
                "per_resource": {r: {"amount": f.amount, "confidence": round(f.confidence, 4),
                                     "source": f.source, "basis": f.basis}
                                 for r, f in self.forecasts.items()}}


@dataclass(slots=True)
class ActionShadow:
    """One action of a shadowed run."""

    action_id: str
    action_type: str
    attempt: int
    order: int
    input_bytes: float
    requested_memory: float | None = None
    """The memory the engine declared for the action (its request), if any."""
    started_ms: int | None = None
    completed_ms: int | None = None
    prediction: Prediction | None = None
    usage: Usage = field(default_factory=Usage)
    feedback_done: bool = False
    completion_seen_ms: int | None = None
    """Processing time at which the completion was seen (the feedback grace runs from it)."""
    sealed_in: int | None = None
    """The sealed chunk holding this action in full, once it completed: it awaits its
    feedback here, and its run's records name it only if its usage changed since
    (``streams.shadow.changelog.seal_finished``)."""
    sealed_usage: Usage | None = None
    """A copy of ``usage`` as the chunk holds it."""


@dataclass(slots=True)
class RunShadow:
    """One shadowed workflow run."""

    workflow_id: str
    run_id: str
    workflow_type: str
    partition: int = 0
    actions: dict[str, ActionShadow] = field(default_factory=dict)
    likely: dict[str, Prediction] = field(default_factory=dict)
    """Placeholders for likely next actions, by action type."""
    last_completed_type: str | None = None
    finished_ms: int | None = None
    applied: dict[str, int] = field(default_factory=dict)
    """By input topic, the offset of the last message applied to this run (kept in its
    record)."""
    replayed_through: dict[str, int] = field(default_factory=dict)
    """``applied`` as restored: messages at or before these offsets are already reflected in
    the restored state and are skipped when consumed again."""
    sealed: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Finished actions written in the run's sealed chunks
    (``streams.shadow.changelog.seal_finished``), by id: (attempt, order). They are no longer
    in ``actions`` (nor in the run's record): kept only to recognise their repeated events."""
    sealed_chunks: int = 0
    """How many sealed chunks the run has (their keys are numbered from 0)."""

    def action_count(self) -> int:
        """How many actions (by id) the run has scheduled: in ``actions`` or sealed."""
        return len(self.actions) + len(self.sealed)

    def already_applied(self, topic: str, offset: int | None) -> bool:
        """Whether a message consumed again after a restore is reflected in the state."""
        return offset is not None and offset <= self.replayed_through.get(topic, -1)

    def note_applied(self, topic: str, offset: int | None) -> None:
        """Remember that the message at ``offset`` of ``topic`` was applied."""
        if offset is not None and offset > self.applied.get(topic, -1):
            self.applied[topic] = offset


HISTORY_INPUT, TELEMETRY_INPUT = "history", "telemetry"
"""The input topics whose applied offsets a run remembers."""


@dataclass(frozen=True)
class Feedback:
    """How a forecast compared with what the action used."""

    workflow_id: str
    run_id: str
    action_id: str
    action_type: str
    predicted: Mapping[str, float]
    actual: Mapping[str, float]
    confidence: float
    source: str
    deviation: float
    """Largest absolute log ratio actual/predicted over the resources with both figures."""
    underprovisioned: bool
    """The action's memory peak exceeded its allocation."""
    lead_time_ms: int | None = None
    """Event time from what caused the reservation (or its placeholder) to the action's start."""


@dataclass
class Effects:
    """What the caller must publish and store."""

    commands: list[Command] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    predictions: list[tuple[RunShadow, Prediction]] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    """What was learned, for every other worker (``ActionOutcome`` records)."""

    def extend(self, other: Effects) -> None:
        """Add ``other``'s effects."""
        self.commands += other.commands
        self.alerts += other.alerts
        self.predictions += other.predictions
        self.feedback += other.feedback
        self.outcomes += other.outcomes


@dataclass
class ShadowConfig:
    """Thresholds of the shadow workflows."""

    confidence_threshold: float = 0.8
    likely_probability: float = 0.3
    """Reserve ahead for next action types at least this likely."""
    miss_alert_ratio: float = 2.0
    """Alert when an action used more than this times, or less than 1/this of, its forecast."""
    feedback_max_wait_ms: int = 600_000
    """A completed action with no usage reported this long after its completion is given up:
    nothing is learned from it, and it no longer waits (nor weighs on its run's record)."""


class Transitions:
    """Which action types follow which, per workflow type, learned from runs."""

    def __init__(self) -> None:
        # By workflow type, then the type completed before: a type's counts are read whole
        # into every record of its runs.
        self._counts: dict[str, dict[str | None, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter))

    def learn(self, workflow_type: str, previous: str | None, scheduled: str) -> None:
        """``scheduled`` was the next type scheduled after ``previous`` completed (``None``: the
        run's start)."""
        self._counts[workflow_type][previous][scheduled] += 1

    def of_type(self, workflow_type: str) -> list[tuple[str | None, str, int]]:
        """What was learned for a workflow type, as (previous, next, count), sorted."""
        return sorted(((previous, scheduled, n)
                       for previous, counts in self._counts.get(workflow_type, {}).items()
                       for scheduled, n in counts.items()),
                      key=lambda item: (item[0] or "", item[1]))

    def merge(self, workflow_type: str, learned: Iterable[Sequence[Any]]) -> None:
        """Take what another worker (or this one before a restart) had learned: each count
        becomes the larger of the two."""
        for previous, scheduled, n in learned:
            counts = self._counts[workflow_type][previous]
            counts[scheduled] = max(counts[scheduled], int(n))

    def likely(self, workflow_type: str, previous: str | None,
               min_probability: float) -> list[tuple[str, float]]:
        """Next action types with their probabilities, most likely first."""
        counts = self._counts.get(workflow_type, {}).get(previous)
        if not counts:
            return []
        total = sum(counts.values())
        return [(t, n / total) for t, n in counts.most_common() if n / total >= min_probability]


class ShadowWorkflows:
    """The shadows of the runs a worker owns."""

    def __init__(self, forecaster: Forecaster, pool: ReservationPool,
                 config: ShadowConfig | None = None) -> None:
        self.forecaster = forecaster
        self.pool = pool
        # Names this worker process in what it teaches the others (it skips its own records).
        self.learner = uuid.uuid4().hex
        self._seen = Seen()
        self.config = config or ShadowConfig()
        self.transitions = Transitions()
        self.runs: dict[tuple[str, str], RunShadow] = {}
        self.latest_run: dict[str, str] = {}
        # Telemetry can overtake the history that schedules its action (separate topics):
        # held here, per run and action, within a bound, until the action is known.
        self.early_usage: dict[tuple[str, str], dict[str, Usage]] = {}
        self.early_count = 0
        self.max_early_usage = 100_000
        self.early_dropped = 0
        """Telemetry batches refused because ``max_early_usage`` actions' were held."""
        # Finished runs in the order they were seen finished (or restored finished), with that
        # time: eviction looks at the front only.
        self._finish_order: deque[tuple[int, tuple[str, str]]] = deque()
        self._finished_at: dict[tuple[str, str], int] = {}
        # Completed actions awaiting feedback, by (time looked at last, run, action, attempt,
        # time the completion was seen), oldest first: the timer looks at the front only, and
        # at an action still without telemetry once per grace, not at every tick.
        self._awaiting_feedback: deque[tuple[int, tuple[str, str], str, int, int]] = deque()
        self.feedback_abandoned = 0
        """Completed actions given up after ``feedback_max_wait_ms`` without any usage."""
        # One "manual sizing needed" alert per workflow and action type, not one per action.
        self._sizing_alerted: set[tuple[str, str]] = set()
        # Runs changed, and runs forgotten, since the caller last took them (to persist them).
        self._touched: set[tuple[str, str]] = set()
        self._forgotten: dict[tuple[str, str], int] = {}

    def learn(self, outcome: Mapping[str, Any]) -> None:
        """Learn a fact: an action's usage (the forecaster) or what was scheduled after what
        (the transitions)."""
        if outcome["kind"] == TRANSITION:
            self.transitions.learn(outcome["workflow_type"], outcome["previous_type"],
                                   outcome["action_type"])
            return
        task, values = observations(outcome)
        for resource, value in values:
            allocated = outcome["allocated_memory_bytes"] if resource == "memory" else 0.0
            self.forecaster.observe(task, resource, value, allocated, outcome["runtime_s"])

    def learn_shared(self, outcome: Mapping[str, Any]) -> bool:
        """Learn a fact another worker (or this one before a restart) published; ``False`` if
        it was this process's own or seen recently."""
        if outcome["learner"] == self.learner or not self._seen.first_time(outcome_key(outcome)):
            return False
        self.learn(outcome)
        return True

    def take_changes(self) -> tuple[set[tuple[str, str]], dict[tuple[str, str], int]]:
        """The runs changed, and the runs forgotten (with their partition), since the last
        call."""
        touched, forgotten = self._touched - self._forgotten.keys(), self._forgotten
        self._touched, self._forgotten = set(), {}
        return touched, forgotten

    def touch(self, key: tuple[str, str]) -> None:
        """Note that a run's state changed (its reservations, say) outside ``on_event``."""
        if key in self.runs:
            self._touched.add(key)

    def load(self, run: RunShadow, reservations: Sequence[Reservation],
             versions: Mapping[str, int], now_ms: int) -> None:
        """Take over a run restored from its record, with what it holds; completed actions
        still waiting for their usage wait again from ``now_ms``, and a finished run is
        forgotten a retention after ``now_ms``."""
        key = (run.workflow_id, run.run_id)
        run.replayed_through = dict(run.applied)
        self.runs[key] = run
        self.latest_run[run.workflow_id] = run.run_id
        self.pool.restore(run.workflow_id, run.run_id, reservations, versions)
        if run.finished_ms is not None:  # evicted a retention after its restore
            self._mark_finished(key, now_ms)
        for action in run.actions.values():
            if action.completed_ms is not None and not action.feedback_done:
                self._awaiting_feedback.append(
                    (now_ms, key, action.action_id, action.attempt, now_ms))

    def drop_partitions(self, partitions: Iterable[int]) -> list[tuple[str, str]]:
        """Forget the runs of partitions this worker no longer owns, and what they hold (their
        new owner restores and holds it): no command is made."""
        partitions = set(partitions)
        gone = [key for key, run in self.runs.items() if run.partition in partitions]
        for key in gone:
            del self.runs[key]
            self._finished_at.pop(key, None)
            self.pool.forget_run(*key)
            if self.latest_run.get(key[0]) == key[1]:
                del self.latest_run[key[0]]
        self._touched -= set(gone)
        return gone

    def create(self, workflow_id: str, run_id: str, workflow_type: str, now_ms: int,
               event_ms: int | None = None, partition: int = 0) -> Effects:
        """Make a run's shadow (idempotent) and reserve ahead for its likely first actions
        (``event_ms``: the workflow's time of its start, when known; ``partition``: the
        workflow's, whose capacity share its reservations are held against)."""
        key = (workflow_id, run_id)
        if key in self.runs:
            return Effects()
        run = self.runs[key] = RunShadow(workflow_id, run_id, workflow_type, partition)
        self.latest_run[workflow_id] = run_id
        self._touched.add(key)
        return self._reserve_likely(run, None, now_ms, event_ms, cause=0)

    def shadow_of(self, workflow_id: str) -> RunShadow | None:
        """The shadow of a workflow's latest run."""
        run_id = self.latest_run.get(workflow_id)
        return None if run_id is None else self.runs.get((workflow_id, run_id))

    def on_event(self, event: HistoryEvent, now_ms: int, partition: int = 0,
                 offset: int | None = None) -> Effects:
        """Follow a history event (of a workflow on ``partition``, carried by the message at
        ``offset``: one the restored state already reflects changes nothing)."""
        effects = Effects()
        key = (event.workflow_id, event.run_id)
        if key not in self.runs:
            effects.extend(self.create(event.workflow_id, event.run_id, event.workflow_type,
                                       now_ms, event.timestamp_ms, partition))
        run = self.runs[key]
        if run.already_applied(HISTORY_INPUT, offset):
            return effects
        run.note_applied(HISTORY_INPUT, offset)
        self._touched.add(key)
        kind = event.kind
        if kind is EventKind.ACTION_SCHEDULED and event.action_id:
            effects.extend(self._scheduled(run, event, now_ms))
        elif kind is EventKind.ACTION_STARTED and event.action_id:
            action = run.actions.get(event.action_id)
            if (action is not None and action.started_ms is None
                    and event.attempt == action.attempt):
                action.started_ms = event.timestamp_ms
                effects.extend(self._started(run, action, now_ms))
        elif kind in (EventKind.ACTION_COMPLETED, EventKind.ACTION_FAILED) and event.action_id:
            action = run.actions.get(event.action_id)
            if (action is not None and action.completed_ms is None
                    and event.attempt == action.attempt):
                action.completed_ms = event.timestamp_ms
                action.completion_seen_ms = now_ms
                if action.prediction and action.prediction.reservation_id:
                    effects.commands += self.pool.release(action.prediction.reservation_id)
                reported = reported_usage(event.attributes)
                if reported:  # the engine measured it: learn now, as the offline protocol does
                    usage = action.usage.actual() if action.usage.samples else {}
                    effects.extend(self.feedback(run, action, {**usage, **reported}))
                else:  # learn once its telemetry had time to arrive
                    self._awaiting_feedback.append(
                        (now_ms, key, action.action_id, action.attempt, now_ms))
                if kind is EventKind.ACTION_COMPLETED:
                    run.last_completed_type = action.action_type
                    effects.extend(self._reserve_likely(run, action.action_type, now_ms,
                                                        event.timestamp_ms, event.sequence))
        elif kind in (EventKind.WORKFLOW_COMPLETED, EventKind.WORKFLOW_FAILED):
            if run.finished_ms is None:
                run.finished_ms = now_ms
                self._mark_finished(key, now_ms)
            # Whatever the run still holds goes back: unclaimed placeholders, and actions whose
            # completion never arrived (a lost event must not hold capacity for ever).
            held = [p.reservation_id for p in run.likely.values()] + [
                a.prediction.reservation_id for a in run.actions.values()
                if a.prediction is not None and a.completed_ms is None]
            for rid in held:
                if rid:
                    effects.commands += self.pool.release(rid, "workflow finished")
            run.likely.clear()
        return effects

    def on_telemetry(self, workflow_id: str, run_id: str, action_id: str,
                     memory: Sequence[float], cpu: Sequence[float], network: Sequence[float],
                     cost: Sequence[float], offset: int | None = None) -> bool:
        """Fold telemetry samples (of the message at ``offset``: one the restored state already
        reflects is not counted twice) into an action's usage. Samples of an action not
        scheduled yet are held until it is; ``False`` if they had to be dropped because the
        usage of ``max_early_usage`` actions is held already (counted in ``early_dropped``)."""
        run = self.runs.get((workflow_id, run_id))
        if run is not None and run.already_applied(TELEMETRY_INPUT, offset):
            return True
        action = run.actions.get(action_id) if run else None
        if action is not None:
            action.usage.add(memory, cpu, network, cost)
            run.note_applied(TELEMETRY_INPUT, offset)
            self._touched.add((workflow_id, run_id))
            return True
        if run is not None and action_id in run.sealed:
            return True  # finished, scored and sealed: late samples change nothing
        held = self.early_usage.get((workflow_id, run_id))
        usage = held.get(action_id) if held else None
        if usage is None:
            if self.early_count >= self.max_early_usage:
                self.early_dropped += 1
                return False
            usage = self.early_usage.setdefault((workflow_id, run_id), {})[action_id] = Usage()
            self.early_count += 1
        usage.add(memory, cpu, network, cost)
        return True

    def due_feedback(self, now_ms: int, grace_ms: int) -> Effects:
        """Feedback for completed actions whose telemetry had ``grace_ms`` to arrive; one still
        without any is looked at again a grace later, and given up once it waited
        ``feedback_max_wait_ms`` (counted in ``feedback_abandoned``)."""
        effects = Effects()
        queue = self._awaiting_feedback
        later = []
        while queue and now_ms - queue[0][0] >= grace_ms:
            _, key, action_id, attempt, seen_ms = queue.popleft()
            run = self.runs.get(key)
            action = run.actions.get(action_id) if run else None
            if action is None or action.feedback_done or action.attempt != attempt:
                continue
            if action.usage.samples:
                effects.extend(self.feedback(run, action, action.usage.actual()))
            elif now_ms - seen_ms >= self.config.feedback_max_wait_ms:
                action.feedback_done = True  # nothing to learn: sealed with the finished ones
                self._touched.add(key)
                self.feedback_abandoned += 1
            else:  # its telemetry may still come
                later.append((now_ms, key, action_id, attempt, seen_ms))
        queue.extend(later)
        return effects

    def feedback(self, run: RunShadow, action: ActionShadow,
                 actual: Mapping[str, float]) -> Effects:
        """Score a forecast against what the action used, learn from it, alert on a large
        miss. Given twice for one action, the second is ignored."""
        effects = Effects()
        if action.feedback_done or action.prediction is None:
            return effects
        action.feedback_done = True
        self._touched.add((run.workflow_id, run.run_id))
        prediction = action.prediction
        context = self._context(run, action)
        runtime_s = max(0.0, ((action.completed_ms or 0) - (action.started_ms or 0)) / 1000)
        outcome = usage_outcome(
            self.learner, (run.workflow_id, run.run_id, action.action_id, action.attempt),
            run.workflow_type, action.action_type, context.input_bytes, actual,
            prediction.allocation.get("memory_bytes", 0.0), runtime_s)
        self.learn(outcome)
        effects.outcomes.append(outcome)
        ratios = []
        for resource, value in actual.items():
            allocated = prediction.allocation.get(resource, 0.0)
            if resource in FORECAST_RESOURCE and allocated > 0 and value > 0:
                ratios.append(abs(math.log(value / allocated)))
        under = actual.get("memory_bytes", 0.0) > prediction.allocation.get("memory_bytes",
                                                                            math.inf)
        deviation = max(ratios, default=0.0)
        lead = (action.started_ms - prediction.issued_event_ms
                if action.started_ms is not None and prediction.issued_event_ms is not None
                else None)
        result = Feedback(run.workflow_id, run.run_id, action.action_id, action.action_type,
                          dict(prediction.allocation), dict(actual), prediction.confidence,
                          prediction.source, deviation, under, lead)
        effects.feedback.append(result)
        # Exceeding the allocation always alerts; a learned forecast also alerts when it missed
        # by more than the ratio (a manual default is expected to miss).
        if under or (prediction.source != MANUAL
                     and deviation > math.log(self.config.miss_alert_ratio)):
            what = "exceeded its memory allocation" if under else "missed its forecast"
            message = (f"{action.action_type} {what}: used {_show(actual)}, forecast "
                       f"{_show(prediction.allocation)}")
            effects.alerts.append(Alert(run.workflow_id, run.run_id, action.action_id, message,
                                        "RESOURCE_MISS", "HIGH" if under else "MEDIUM"))
        return effects

    def evict_finished(self, now_ms: int, retention_ms: int) -> list[tuple[str, str]]:
        """Forget runs finished ``retention_ms`` ago, with what they hold and what was held for
        them. O(1) amortised per run: runs are taken from the front of the order they finished
        in, and everything kept about a run is found by its key."""
        gone = []
        queue = self._finish_order
        while queue and now_ms - queue[0][0] > retention_ms:
            at, key = queue.popleft()
            if self._finished_at.get(key) != at or key not in self.runs:
                continue  # forgotten already (its partition moved), or restored again since
            del self._finished_at[key]
            gone.append(key)
            self._forgotten[key] = self.runs.pop(key).partition
            self.early_count -= len(self.early_usage.pop(key, {}))
            self.forecaster.forget_run(key[1])
            self.pool.forget_run(*key)
            if self.latest_run.get(key[0]) == key[1]:
                del self.latest_run[key[0]]
        return gone

    def _scheduled(self, run: RunShadow, event: HistoryEvent, now_ms: int) -> Effects:
        effects = Effects()
        action_id = event.action_id or ""
        previous = run.actions.get(action_id)
        order = run.action_count()
        first = previous is None  # the action's first attempt this shadow sees
        if previous is not None:
            if event.attempt <= previous.attempt:
                return effects  # a duplicate
            effects.extend(self._retired(previous))
            order = previous.order
        elif action_id in run.sealed:
            attempt, order = run.sealed[action_id]
            if event.attempt <= attempt:
                return effects  # a duplicate of a finished, sealed action
            del run.sealed[action_id]  # retried: released and scored already, nothing to retire
            first = False
        action_type = event.action_type or "unknown"
        declared = event.declared.memory_bytes if event.declared else None
        action = run.actions[action_id] = ActionShadow(
            action_id, action_type, event.attempt, order,
            float(event.attributes.get("input_bytes", 0.0)),
            float(declared) if declared else None)
        early = self._take_early(run, action_id)
        if early is not None:
            action.usage = early
        if first:
            outcome = transition_outcome(
                self.learner, (run.workflow_id, run.run_id, action_id, event.attempt),
                run.workflow_type, action_type, run.last_completed_type)
            self.learn(outcome)
            effects.outcomes.append(outcome)
        prediction = self._predict(run, action, now_ms)
        placeholder = run.likely.pop(action_type, None) if first else None
        if placeholder is not None and placeholder.reservation_id:
            # Claim the reservation made ahead; its lead time runs from then.
            prediction.reservation_id = placeholder.reservation_id
            prediction.issued_ms = placeholder.issued_ms
            prediction.issued_event_ms = placeholder.issued_event_ms
            commands, alerts = self.pool.adjust(placeholder.reservation_id,
                                                prediction.allocation, now_ms, action_id)
        else:
            prediction.issued_event_ms = event.timestamp_ms
            prediction.reservation_id = reservation_id(run.workflow_id, run.run_id, action_id,
                                                       event.attempt)
            commands, alerts = self.pool.reserve(
                run.workflow_id, run.run_id, action_id, action_type, prediction.allocation,
                confidence=prediction.confidence, source=prediction.source,
                now_ms=now_ms, fallback=self._fallback(run, action), attempt=event.attempt,
                partition=run.partition)
            if not commands:
                prediction.reservation_id = None
        action.prediction = prediction
        effects.commands += commands
        effects.alerts += alerts
        effects.predictions.append((run, prediction))
        if (prediction.source == MANUAL
                and (run.workflow_type, action_type) not in self._sizing_alerted):
            self._sizing_alerted.add((run.workflow_type, action_type))
            effects.alerts.append(Alert(run.workflow_id, run.run_id, action_id,
                                        f"no history for {action_type} in {run.workflow_type}: "
                                        "manual sizing needed (reserved the default; alerted "
                                        "once per workflow and action type)",
                                        "SIZING_NEEDED", "LOW"))
        return effects

    def _mark_finished(self, key: tuple[str, str], now_ms: int) -> None:
        self._finished_at[key] = now_ms
        self._finish_order.append((now_ms, key))

    def _take_early(self, run: RunShadow, action_id: str) -> Usage | None:
        """The usage held for an action before it was scheduled, if any (no longer held)."""
        key = (run.workflow_id, run.run_id)
        held = self.early_usage.get(key)
        usage = held.pop(action_id, None) if held else None
        if usage is not None:
            self.early_count -= 1
            if not held:
                del self.early_usage[key]
        return usage

    def _predict(self, run: RunShadow, action: ActionShadow, now_ms: int,
                 likely: bool = False) -> Prediction:
        context = self._context(run, action)
        forecasts = {r: self.forecaster.forecast(context, FORECAST_RESOURCE[r])
                     for r in RESOURCE_CLASSES}
        allocation = {r: f.amount for r, f in forecasts.items()}
        memory = forecasts["memory_bytes"]
        source, confidence = memory.source, memory.confidence
        if source == MODEL and confidence < self.config.confidence_threshold:
            # Not confident in the learned model: said so (HISTORICAL), but the amount stays the
            # forecaster's best estimate, the one the offline evaluation scores.
            source = HISTORICAL
        return Prediction(action.action_id, action.action_type, forecasts, allocation, source,
                          confidence, None, now_ms, likely)

    def _fallback(self, run: RunShadow, action: ActionShadow) -> dict[str, float] | None:
        # A smaller reservation to try when the pool cannot hold the forecast: the median of
        # the past peaks where there are any.
        median = self.forecaster.median(self._context(run, action), "memory")
        return None if median is None else {"memory_bytes": median}

    def _reserve_likely(self, run: RunShadow, previous: str | None, now_ms: int,
                        event_ms: int | None, cause: int) -> Effects:
        effects = Effects()
        for action_type, probability in self.transitions.likely(
                run.workflow_type, previous, self.config.likely_probability):
            if action_type in run.likely:
                continue
            placeholder = f"next:{action_type}"
            action = ActionShadow(placeholder, action_type, 1, run.action_count(), 0.0)
            prediction = self._predict(run, action, now_ms, likely=True)
            prediction.issued_event_ms = event_ms
            commands, alerts = self.pool.reserve(
                run.workflow_id, run.run_id, placeholder, action_type, prediction.allocation,
                confidence=prediction.confidence * probability,
                source=prediction.source, now_ms=now_ms,
                rid=placeholder_id(run.workflow_id, run.run_id, action_type, cause),
                partition=run.partition)
            if not commands:
                effects.alerts += alerts
                continue
            prediction.reservation_id = commands[0].reservation.reservation_id
            run.likely[action_type] = prediction
            effects.commands += commands
            effects.predictions.append((run, prediction))
        return effects

    def _started(self, run: RunShadow, action: ActionShadow, now_ms: int) -> Effects:
        """Size the action again with what is known now (completions since its scheduling may
        have taught the forecaster) and adjust its reservation when the amount changed."""
        effects = Effects()
        prediction = action.prediction
        if prediction is None:
            return effects
        fresh = self._predict(run, action, now_ms)
        if _changed(prediction.allocation, fresh.allocation) and prediction.reservation_id:
            commands, alerts = self.pool.adjust(prediction.reservation_id, fresh.allocation,
                                                now_ms)
            effects.alerts += alerts
            if commands:
                effects.commands += commands
                prediction.forecasts, prediction.allocation = fresh.forecasts, fresh.allocation
                prediction.source, prediction.confidence = fresh.source, fresh.confidence
                effects.predictions.append((run, prediction))
        if prediction.reservation_id:
            self.pool.start(prediction.reservation_id, now_ms)
        return effects

    def _retired(self, action: ActionShadow) -> Effects:
        """An earlier attempt of an action that is being retried: release what it still holds
        (its failure may never have been reported) and learn nothing from it."""
        effects = Effects()
        if action.prediction and action.prediction.reservation_id:
            effects.commands += self.pool.release(action.prediction.reservation_id, "retried")
        action.feedback_done = True
        return effects

    @staticmethod
    def _context(run: RunShadow, action: ActionShadow) -> TaskContext:
        return TaskContext(run.workflow_type, run.run_id, action.action_type, action.attempt,
                           action.input_bytes, action.order, action.requested_memory)


USAGE_PREFIX = "usage."
"""Attributes of an ``ACTION_COMPLETED``/``ACTION_FAILED`` event that report what the action
used, as the engine measured it (``usage.memory_bytes`` peak, ``usage.cpu_cores`` mean,
``usage.network_bytes``, ``usage.cost``): learned from at once, without waiting for telemetry."""


def reported_usage(attributes: Mapping[str, float]) -> dict[str, float]:
    """The usage an event's attributes report, by resource class."""
    return {name: float(attributes[USAGE_PREFIX + name]) for name in RESOURCE_CLASSES
            if USAGE_PREFIX + name in attributes}


def _changed(old: Mapping[str, float], new: Mapping[str, float], tolerance: float = 1e-6) -> bool:
    return any(abs(new.get(k, 0.0) - old.get(k, 0.0)) > tolerance * max(1.0, abs(old.get(k, 0.0)))
               for k in set(old) | set(new))


def _show(amounts: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(amounts.items()))
