"""The reservation pool: capacity per resource class, and the commands a resource manager receives.

Pure: callers pass the time and publish the commands. A reservation is made ahead of an action
(``reserve``), changed (``adjust``), given back when the action completes (``release``), or lapses
if the action never starts before it expires (``expire``). When the pool cannot hold what is asked,
a smaller fallback (a historical percentile, say) is tried; either way an alert says so. Every
command has a deterministic id (a resource manager deduplicates on it) and belongs to one
workflow, whose commands must be published in order (key them by workflow id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from schemas.ids import stable_hex
from schemas.records import RESOURCE_CLASSES

RESERVE, ADJUST, RELEASE = "RESERVE", "ADJUST", "RELEASE"


@dataclass(frozen=True, slots=True)
class Reservation:
    """Resources held for one action attempt."""

    reservation_id: str
    workflow_id: str
    run_id: str
    action_id: str
    action_type: str
    amounts: Mapping[str, float]
    confidence: float
    source: str
    issued_ms: int
    expires_ms: int
    started_ms: int | None = None
    """When the action started (the reservation was used); ``None`` while it waits."""
    partition: int = 0
    """The workflow's partition: the capacity share it is held against."""


@dataclass(frozen=True)
class Command:
    """What a resource manager is told."""

    command_id: str
    op: str
    reservation: Reservation
    reason: str = ""


@dataclass(frozen=True)
class Alert:
    """Something an operator should know about an action's sizing or reservation."""

    workflow_id: str
    run_id: str
    action_id: str
    message: str
    kind: str = "RESERVATION_FAILED"
    """An ``AnomalyKind``: RESERVATION_FAILED, SIZING_NEEDED or RESOURCE_MISS."""
    severity: str = "MEDIUM"


@dataclass
class PoolStats:
    """Counters for reports."""

    expired: int = 0
    degraded: int = 0
    refused: int = 0
    lead_times_ms: list[int] = field(default_factory=list)


def reservation_id(workflow_id: str, run_id: str, action_id: str, attempt: int = 1) -> str:
    """Deterministic id of the reservation for one action attempt."""
    return stable_hex("reservation", workflow_id, run_id, action_id, str(attempt))


def placeholder_id(workflow_id: str, run_id: str, action_type: str, cause: int) -> str:
    """Deterministic id of a placeholder reserved ahead for a likely next ``action_type``: one
    per cycle, told apart by ``cause``, the sequence of the event that led to it (0: the run's
    start), so a replay makes the same ids and a new cycle new ones."""
    return stable_hex("placeholder", workflow_id, run_id, action_type, str(cause))


class ReservationPool:
    """Capacity per resource class and the reservations held against it.

    ``capacity`` is the whole deployment's, shared out equally among the ``partitions`` of the
    workflows' topics: a workflow's reservations are held against its partition's share. Each
    worker holds the shares of the partitions it owns, so all workers together never hold more
    than the capacity, with no coordination between them (the price: a partition's share may be
    full while another's has room)."""

    def __init__(self, capacity: Mapping[str, float], ttl_ms: int = 600_000,
                 max_lifetime_ms: int = 86_400_000, partitions: int = 1) -> None:
        unknown = set(capacity) - set(RESOURCE_CLASSES)
        if unknown:
            raise ValueError(f"unknown resource classes {sorted(unknown)}; "
                             f"known: {RESOURCE_CLASSES}")
        self.capacity = dict(capacity)
        self.partitions = max(1, partitions)
        self.share = {k: v / self.partitions for k, v in capacity.items()}
        self.ttl_ms = ttl_ms
        self.max_lifetime_ms = max_lifetime_ms
        self.held: dict[str, Reservation] = {}
        self.stats = PoolStats()
        # Versions outlive their reservation (a command id must never come again), until the
        # run is forgotten.
        self._versions: dict[str, int] = {}
        self._ids_of_run: dict[tuple[str, str], set[str]] = {}
        # Kept up to date as reservations come and go: reserving is on the hot path.
        self._in_use: dict[tuple[int, str], float] = {}

    def in_use(self, resource: str, partition: int | None = None) -> float:
        """How much of ``resource`` the held reservations take (of one partition's share)."""
        if partition is not None:
            return self._in_use.get((partition, resource), 0.0)
        return sum(v for (_, r), v in self._in_use.items() if r == resource)

    def _hold(self, reservation: Reservation) -> None:
        previous = self.held.get(reservation.reservation_id)
        if previous is not None:
            self._count(previous, -1)
        self.held[reservation.reservation_id] = reservation
        self._count(reservation, +1)

    def _drop(self, rid: str) -> Reservation | None:
        reservation = self.held.pop(rid, None)
        if reservation is not None:
            self._count(reservation, -1)
        return reservation

    def _count(self, reservation: Reservation, sign: int) -> None:
        for resource, amount in reservation.amounts.items():
            key = (reservation.partition, resource)
            self._in_use[key] = self._in_use.get(key, 0.0) + sign * amount

    def free(self, resource: str, partition: int = 0) -> float:
        """Capacity left of ``resource`` in a partition's share (infinite for a class without a
        capacity)."""
        if resource not in self.share:
            return float("inf")
        return self.share[resource] - self.in_use(resource, partition)

    def reserve(self, workflow_id: str, run_id: str, action_id: str, action_type: str,
                amounts: Mapping[str, float], *, confidence: float, source: str, now_ms: int,
                fallback: Mapping[str, float] | None = None, attempt: int = 1,
                rid: str | None = None, partition: int = 0,
                ) -> tuple[list[Command], list[Alert]]:
        """Hold ``amounts`` for an action, or ``fallback`` if they do not fit. Reserving an
        action already held changes nothing (idempotent). ``rid``: the reservation's id, when
        not the action attempt's (a placeholder's)."""
        rid = rid or reservation_id(workflow_id, run_id, action_id, attempt)
        if rid in self.held:
            return [], []
        alerts: list[Alert] = []
        chosen = dict(amounts)
        if not self._fits(chosen, partition):
            if fallback is not None and self._fits(fallback, partition):
                alerts.append(Alert(workflow_id, run_id, action_id,
                                    f"pool cannot hold {_show(amounts)}; reserved the smaller "
                                    f"fallback {_show(fallback)}"))
                chosen = dict(fallback)
                self.stats.degraded += 1
            else:
                alerts.append(Alert(workflow_id, run_id, action_id,
                                    f"pool exhausted: cannot hold {_show(amounts)} "
                                    f"(free in its partition's share: "
                                    f"{_show({k: self.free(k, partition) for k in self.share})})"))
                self.stats.refused += 1
                return [], alerts
        reservation = Reservation(rid, workflow_id, run_id, action_id, action_type, chosen,
                                  confidence, source, now_ms, now_ms + self.ttl_ms,
                                  partition=partition)
        self._hold(reservation)
        return [self._command(RESERVE, reservation)], alerts

    def start(self, rid: str, now_ms: int) -> None:
        """The action started: the reservation is in use and no longer expires."""
        reservation = self.held.get(rid)
        if reservation is not None and reservation.started_ms is None:
            self._hold(replace(reservation, started_ms=now_ms))
            self.stats.lead_times_ms.append(now_ms - reservation.issued_ms)

    def adjust(self, rid: str, amounts: Mapping[str, float], now_ms: int,
               action_id: str | None = None) -> tuple[list[Command], list[Alert]]:
        """Change a held reservation's amounts, if the pool can hold the change; with
        ``action_id``, the action claiming a placeholder reservation, named from then on."""
        reservation = self.held.get(rid)
        if reservation is None:
            return [], []
        partition = reservation.partition
        others = {k: self.in_use(k, partition) - reservation.amounts.get(k, 0.0)
                  for k in self.share}
        if any(others[k] + amounts.get(k, 0.0) > self.share[k] for k in self.share):
            return [], [Alert(reservation.workflow_id, reservation.run_id, reservation.action_id,
                              f"cannot adjust to {_show(amounts)}: pool exhausted")]
        updated = replace(reservation, amounts=dict(amounts), expires_ms=max(
            reservation.expires_ms, now_ms + self.ttl_ms),
            action_id=action_id or reservation.action_id)
        self._hold(updated)
        return [self._command(ADJUST, updated)], []

    def release(self, rid: str, reason: str = "completed") -> list[Command]:
        """Give a reservation back (the action completed or failed)."""
        reservation = self._drop(rid)
        if reservation is None:
            return []
        return [self._command(RELEASE, reservation, reason)]

    def expire(self, now_ms: int) -> list[Command]:
        """Release reservations whose action never started before they expired, and those
        held longer than the maximum lifetime since their action started (its completion was
        lost)."""
        commands = []
        for reservation in list(self.held.values()):
            if reservation.started_ms is None and reservation.expires_ms <= now_ms:
                reason = "expired unused"
            elif (reservation.started_ms is not None
                  and now_ms - reservation.started_ms >= self.max_lifetime_ms):
                reason = "expired running"
            else:
                continue
            self._drop(reservation.reservation_id)
            self.stats.expired += 1
            commands.append(self._command(RELEASE, reservation, reason))
        return commands

    def forget_run(self, workflow_id: str, run_id: str) -> None:
        """The run is gone for good, or is another worker's now: forget what it holds (no
        command: whoever owns the run now holds it) and its reservations' versions."""
        for rid in self._ids_of_run.pop((workflow_id, run_id), ()):
            self._versions.pop(rid, None)
            self._drop(rid)

    def forget_versions(self, workflow_id: str, run_id: str, rids: Iterable[str]) -> None:
        """Forget the versions of reservations that will never get another command (their
        actions finished and were sealed): what a run's record carries stays bounded."""
        ids = self._ids_of_run.get((workflow_id, run_id), set())
        for rid in rids:
            if rid not in self.held:
                self._versions.pop(rid, None)
                ids.discard(rid)

    def reservations_of(self, workflow_id: str, run_id: str) -> list[Reservation]:
        """The reservations a run holds now."""
        ids = self._ids_of_run.get((workflow_id, run_id), ())
        return [self.held[rid] for rid in sorted(ids) if rid in self.held]

    def versions_of(self, workflow_id: str, run_id: str) -> dict[str, int]:
        """The command versions of a run's reservations (held or not)."""
        ids = self._ids_of_run.get((workflow_id, run_id), ())
        return {rid: self._versions[rid] for rid in sorted(ids) if rid in self._versions}

    def restore(self, workflow_id: str, run_id: str, reservations: Iterable[Reservation],
                versions: Mapping[str, int]) -> None:
        """Hold what a restored run held, and continue its command versions (no command: the
        resource manager was told already)."""
        ids = self._ids_of_run.setdefault((workflow_id, run_id), set())
        for reservation in reservations:
            self._hold(reservation)
            ids.add(reservation.reservation_id)
        for rid, version in versions.items():
            self._versions[rid] = version
            ids.add(rid)

    def _fits(self, amounts: Mapping[str, float], partition: int) -> bool:
        return all(amounts.get(k, 0.0) <= self.free(k, partition) for k in self.share)

    def _command(self, op: str, reservation: Reservation, reason: str = "") -> Command:
        rid = reservation.reservation_id
        version = self._versions.get(rid, 0) + 1
        self._versions[rid] = version
        self._ids_of_run.setdefault((reservation.workflow_id, reservation.run_id), set()).add(rid)
        command_id = stable_hex("command", reservation.reservation_id, op, str(version))
        return Command(command_id, op, reservation, reason)


def _show(amounts: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(amounts.items()))
