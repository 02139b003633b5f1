"""How many log lines a recurring kind of message may take (pure: the caller passes the time).

Anomalies are data: every one goes to ``shadow.anomalies`` and the ``anomalies`` table. The log is
for the person on call, and a pool that runs dry raises an anomaly per action: one warning line
each made a worker write tens of thousands of lines a minute (and spend its loop formatting
them). A budget lets the first ``per_window`` lines of each kind through in every window of
``window_ms`` and counts the rest, so that the next line let through can say how many were held
back since.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class LogBudget:
    """Per key: at most ``per_window`` lines in each ``window_ms`` of the caller's clock."""

    per_window: int = 10
    window_ms: int = 60_000
    _windows: dict[Hashable, tuple[int, int, int]] = field(default_factory=dict)
    """Per key: (start of its window, lines let through in it, lines held back since the last
    line let through)."""

    def admit(self, key: Hashable, now_ms: int) -> int | None:
        """``None`` if a line of ``key`` at ``now_ms`` is over budget (it is counted); otherwise
        how many lines of ``key`` were held back before it, for the line to say so."""
        start, let_through, held = self._windows.get(key, (now_ms, 0, 0))
        if now_ms - start >= self.window_ms:
            start, let_through = now_ms, 0
        if let_through >= self.per_window:
            self._windows[key] = (start, let_through, held + 1)
            return None
        self._windows[key] = (start, let_through + 1, 0)
        return held
