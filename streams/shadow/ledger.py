"""What a resource manager holds, rebuilt from ``shadow.reservations``: the reference consumer.

Commands are applied in the order they arrive for each workflow (they are keyed by workflow
id); a command seen before (same ``command_id``, as after a producer's crash) changes nothing.
The ledger keeps the reservations held now and their totals per resource class, the highest
totals ever held, and every inconsistency it met (a reservation made twice, a release or an
adjustment of one not held): a stream a resource manager can trust leaves that list empty and,
once every workflow finished, nothing held. Pure: callers feed it decoded records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.records import RESOURCE_CLASSES


@dataclass(frozen=True)
class Held:
    """One reservation held now."""

    reservation_id: str
    workflow_id: str
    run_id: str
    action_id: str
    action_type: str
    amounts: Mapping[str, float]
    source: str


@dataclass
class ReservationLedger:
    """The reservations held, as a resource manager following the commands would hold them."""

    held: dict[str, Held] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RESOURCE_CLASSES, 0.0))
    peaks: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RESOURCE_CLASSES, 0.0))
    problems: list[str] = field(default_factory=list)
    commands: int = 0
    duplicates: int = 0
    reserved: int = 0
    released: int = 0
    _seen: set[str] = field(default_factory=set)
    _ended: set[str] = field(default_factory=set)

    def apply_all(self, records: Iterable[Mapping[str, Any]]) -> ReservationLedger:
        """Apply every command of ``records``, in order; returns the ledger."""
        for record in records:
            self.apply(record)
        return self

    def apply(self, record: Mapping[str, Any]) -> bool:
        """Apply one ``ReservationCommand`` record; ``False`` for a command seen before."""
        if record["command_id"] in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(record["command_id"])
        self.commands += 1
        rid, op = record["reservation_id"], record["op"]
        if op == "RESERVE":
            self._reserve(rid, record)
        elif op == "ADJUST":
            self._adjust(rid, record)
        elif op == "RELEASE":
            self._release(rid)
        else:
            self.problems.append(f"{rid}: unknown op {op!r}")
        return True

    @property
    def balanced(self) -> bool:
        """Nothing held, and every reservation released exactly once with no inconsistency."""
        return not self.held and not self.problems and self.reserved == self.released

    def _reserve(self, rid: str, record: Mapping[str, Any]) -> None:
        if rid in self.held or rid in self._ended:
            self.problems.append(f"{rid}: reserved again ({record['action_id']})")
            return
        self.reserved += 1
        self._hold(rid, record)

    def _adjust(self, rid: str, record: Mapping[str, Any]) -> None:
        if rid not in self.held:
            self.problems.append(f"{rid}: adjusted while not held ({record['action_id']})")
            return
        self._drop(rid)
        self._hold(rid, record)

    def _release(self, rid: str) -> None:
        if rid not in self.held:
            self.problems.append(f"{rid}: released while not held")
            return
        self._drop(rid)
        self._ended.add(rid)
        self.released += 1

    def _hold(self, rid: str, record: Mapping[str, Any]) -> None:
        amounts = {name: float(record["resources"].get(name) or 0.0) for name in RESOURCE_CLASSES}
        self.held[rid] = Held(rid, record["workflow_id"], record["run_id"], record["action_id"],
                              record["action_type"], amounts, record["source"])
        for name, amount in amounts.items():
            self.totals[name] += amount
            self.peaks[name] = max(self.peaks[name], self.totals[name])

    def _drop(self, rid: str) -> None:
        for name, amount in self.held.pop(rid).amounts.items():
            self.totals[name] -= amount
