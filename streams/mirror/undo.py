"""The mirror's undo log: for each applied event, the values its changes overwrote.

It is the largest part of a mirror's memory (an event changes two or three variables, and a
dict per event costs hundreds of bytes), so it is kept flat: one array of sequences, one of
where each event's entries end, and one list each of names and previous values, shared by all
events; the names share the variables' interned strings.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from typing import Any


class UndoLog:
    """The previous values of what the newest ``depth`` (or up to a quarter more) applied
    events changed, oldest first."""

    __slots__ = ("_ends", "_names", "_sequences", "_values", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._sequences = array("q")
        self._ends = array("q")
        """Where each event's entries end in ``_names`` and ``_values``."""
        self._names: list[str] = []
        self._values: list[Any] = []

    def record(self, sequence: int, previous: Mapping[str, Any]) -> None:
        """Remember what the event at ``sequence`` overwrote (``ABSENT`` where nothing was)."""
        self._sequences.append(sequence)
        self._names.extend(previous)
        self._values.extend(previous.values())
        self._ends.append(len(self._names))
        if len(self._sequences) > self.depth + max(self.depth // 4, 1):
            self._drop_oldest(len(self._sequences) - self.depth)

    @property
    def oldest(self) -> int | None:
        """The sequence of the oldest event still undoable."""
        return self._sequences[0] if self._sequences else None

    def newest_first(self) -> Iterator[tuple[int, list[tuple[str, Any]]]]:
        """Each event's sequence and its (name, previous value) pairs, newest event first."""
        names, values, ends = self._names, self._values, self._ends
        for i in range(len(self._sequences) - 1, -1, -1):
            start, end = ends[i - 1] if i else 0, ends[i]
            yield self._sequences[i], list(zip(names[start:end], values[start:end], strict=True))

    def _drop_oldest(self, count: int) -> None:
        # Batched, so dropping costs O(1) per recorded event rather than a shift per event.
        cut = self._ends[count - 1]
        del self._names[:cut]
        del self._values[:cut]
        del self._sequences[:count]
        self._ends = array("q", (end - cut for end in self._ends[count:]))
