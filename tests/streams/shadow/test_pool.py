"""The reservation pool: capacity, fallback and alerts, release, expiry, idempotent ids."""

from __future__ import annotations

import pytest

from streams.shadow.pool import ADJUST, RELEASE, RESERVE, ReservationPool, reservation_id

GB = 10**9


def _pool() -> ReservationPool:
    return ReservationPool({"memory_bytes": 10 * GB, "cpu_cores": 8}, ttl_ms=1_000)


def test_reserve_until_exhausted_then_fallback_then_refuse() -> None:
    pool = _pool()
    commands, alerts = pool.reserve("w", "r", "a1", "t", {"memory_bytes": 6 * GB, "cpu_cores": 2},
                                    confidence=0.9, source="MODEL", now_ms=0)
    assert [c.op for c in commands] == [RESERVE] and alerts == []
    assert pool.free("memory_bytes") == 4 * GB
    commands, alerts = pool.reserve("w", "r", "a2", "t", {"memory_bytes": 6 * GB},
                                    confidence=0.9, source="MODEL", now_ms=0,
                                    fallback={"memory_bytes": 3 * GB})
    assert commands[0].reservation.amounts == {"memory_bytes": 3 * GB}
    assert "fallback" in alerts[0].message and pool.stats.degraded == 1
    commands, alerts = pool.reserve("w", "r", "a3", "t", {"memory_bytes": 2 * GB},
                                    confidence=0.9, source="MODEL", now_ms=0)
    assert commands == [] and "pool exhausted" in alerts[0].message
    assert pool.stats.refused == 1


def test_release_gives_capacity_back_and_ids_are_deterministic() -> None:
    pool = _pool()
    pool.reserve("w", "r", "a1", "t", {"memory_bytes": 6 * GB}, confidence=1, source="MODEL",
                 now_ms=0)
    again, _ = pool.reserve("w", "r", "a1", "t", {"memory_bytes": 6 * GB}, confidence=1,
                            source="MODEL", now_ms=5)
    assert again == [], "reserving the same action twice changes nothing"
    rid = reservation_id("w", "r", "a1")
    [released] = pool.release(rid)
    assert released.op == RELEASE and pool.free("memory_bytes") == 10 * GB
    # The same sequence in another pool gives the same command ids (dedup by resource managers).
    other = _pool()
    [first], _ = other.reserve("w", "r", "a1", "t", {"memory_bytes": 6 * GB}, confidence=1,
                               source="MODEL", now_ms=0)
    assert first.command_id != released.command_id
    assert first.command_id == _pool().reserve("w", "r", "a1", "t", {"memory_bytes": 1},
                                               confidence=1, source="MODEL",
                                               now_ms=9)[0][0].command_id


def test_unused_reservations_expire_and_used_ones_record_lead_time() -> None:
    pool = _pool()
    pool.reserve("w", "r", "used", "t", {"memory_bytes": GB}, confidence=1, source="MODEL",
                 now_ms=0)
    pool.reserve("w", "r", "idle", "t", {"memory_bytes": GB}, confidence=1, source="MODEL",
                 now_ms=0)
    pool.start(reservation_id("w", "r", "used"), now_ms=400)
    assert pool.expire(999) == []
    [expired] = pool.expire(1_000)
    assert expired.reservation.action_id == "idle" and expired.reason == "expired unused"
    assert pool.stats.lead_times_ms == [400] and pool.stats.expired == 1
    assert list(pool.held) == [reservation_id("w", "r", "used")]


def test_adjust_within_capacity_only() -> None:
    pool = _pool()
    pool.reserve("w", "r", "a", "t", {"memory_bytes": 4 * GB}, confidence=1, source="MODEL",
                 now_ms=0)
    rid = reservation_id("w", "r", "a")
    [adjusted], _ = pool.adjust(rid, {"memory_bytes": 8 * GB}, now_ms=10)
    assert adjusted.op == ADJUST and pool.free("memory_bytes") == 2 * GB
    commands, alerts = pool.adjust(rid, {"memory_bytes": 11 * GB}, now_ms=20)
    assert commands == [] and "cannot adjust" in alerts[0].message


def test_unknown_resource_class_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown resource classes"):
        ReservationPool({"gpus": 4})


def test_capacity_is_shared_out_among_the_partitions() -> None:
    pool = ReservationPool({"memory_bytes": 10 * GB}, partitions=2)
    assert pool.free("memory_bytes", 0) == pool.free("memory_bytes", 1) == 5 * GB
    ok, _ = pool.reserve("w", "r", "a", "t", {"memory_bytes": 4 * GB}, confidence=1.0,
                         source="MODEL", now_ms=0, partition=0)
    full, alerts = pool.reserve("w", "r", "b", "t", {"memory_bytes": 4 * GB}, confidence=1.0,
                                source="MODEL", now_ms=0, partition=0)
    other, _ = pool.reserve("v", "r", "c", "t", {"memory_bytes": 4 * GB}, confidence=1.0,
                            source="MODEL", now_ms=0, partition=1)
    assert ok and not full and other and "partition's share" in alerts[0].message
    assert pool.in_use("memory_bytes") == 8 * GB <= pool.capacity["memory_bytes"]
    [reservation] = [c.reservation for c in ok]
    assert pool.adjust(reservation.reservation_id, {"memory_bytes": 6 * GB}, 0)[0] == []
