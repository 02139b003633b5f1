"""The one clock of the pipeline: wall-clock epoch milliseconds."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000
