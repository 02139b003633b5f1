"""The reference consumer of shadow.reservations: dedupe, totals, peaks, inconsistencies."""

from __future__ import annotations

from streams.shadow.ledger import ReservationLedger

GB = 10**9


def _command(command_id: str, op: str, rid: str, memory: float = 0.0) -> dict:
    return {"command_id": command_id, "op": op, "reservation_id": rid, "workflow_id": "w",
            "run_id": "r", "action_id": "a", "action_type": "t", "source": "MODEL",
            "resources": {"memory_bytes": memory, "cpu_cores": None, "network_bytes": None,
                          "cost": None}}


def test_a_clean_stream_balances_and_repeats_change_nothing() -> None:
    ledger = ReservationLedger().apply_all([
        _command("c1", "RESERVE", "r1", 2 * GB), _command("c2", "RESERVE", "r2", 1 * GB),
        _command("c1", "RESERVE", "r1", 2 * GB),  # re-sent: ignored
        _command("c3", "ADJUST", "r1", 4 * GB), _command("c4", "RELEASE", "r2"),
    ])
    assert ledger.totals["memory_bytes"] == 4 * GB and ledger.peaks["memory_bytes"] == 5 * GB
    assert ledger.duplicates == 1 and not ledger.problems and not ledger.balanced
    ledger.apply(_command("c5", "RELEASE", "r1"))
    assert ledger.balanced and ledger.totals["memory_bytes"] == 0


def test_what_a_resource_manager_cannot_trust_is_listed() -> None:
    ledger = ReservationLedger().apply_all([
        _command("c1", "RESERVE", "r1", GB), _command("c2", "RELEASE", "r1"),
        _command("c3", "RESERVE", "r1", GB),   # the same reservation made again
        _command("c4", "RELEASE", "r9"),       # never held
        _command("c5", "ADJUST", "r8", GB),    # never held
    ])
    assert len(ledger.problems) == 3 and not ledger.balanced
