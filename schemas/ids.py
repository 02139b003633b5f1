"""Stable ids: the same identity gives the same id in every process, run and replay, so
consumers and ClickHouse can deduplicate on them."""

from __future__ import annotations

import hashlib


def _digest(parts: tuple[object, ...], size: int) -> bytes:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=size).digest()


def stable_int(*identity: object) -> int:
    """A 64-bit id of ``identity`` (row ids of the ClickHouse tables)."""
    return int.from_bytes(_digest(identity, 8), "little")


def stable_hex(*identity: object, size: int = 12) -> str:
    """A hexadecimal id of ``size`` bytes of ``identity`` (reservation and command ids)."""
    return _digest(identity, size).hex()
