"""Scoring anomaly detection against injected faults (precision and recall).

An anomaly is explained by a fault of the same workflow at or before its sequence and at most
``window`` sequences before it (a fault shows at the primary's next snapshot, so ``window`` is the
snapshot interval). Precision: the share of anomalies explained by some fault. Recall: the share
of faults that explain at least one anomaly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from streams.traces.faulty_primary import Fault


@dataclass(frozen=True)
class DetectionScore:
    """How anomalies and injected faults matched."""

    faults: int
    anomalies: int
    explained: int
    """Anomalies explained by some fault."""
    detected: int
    """Faults that explain at least one anomaly."""
    by_kind: dict[str, tuple[int, int]]
    """Fault kind -> (injected, detected)."""

    @property
    def precision(self) -> float:
        """Explained anomalies / anomalies (1.0 when there are none)."""
        return self.explained / self.anomalies if self.anomalies else 1.0

    @property
    def recall(self) -> float:
        """Detected faults / faults (1.0 when there are none)."""
        return self.detected / self.faults if self.faults else 1.0


def score_detection(faults: Iterable[Fault], anomalies: Iterable[tuple[str, int]],
                    window: int) -> DetectionScore:
    """Match ``anomalies`` (workflow id, sequence) against ``faults``."""
    faults = list(faults)
    anomalies = list(anomalies)
    by_workflow: dict[str, list[Fault]] = defaultdict(list)
    for fault in faults:
        by_workflow[fault.workflow_id].append(fault)
    hit: set[int] = set()
    explained = 0
    for workflow_id, sequence in anomalies:
        matching = [id(f) for f in by_workflow.get(workflow_id, ())
                    if f.sequence <= sequence <= f.sequence + window]
        explained += bool(matching)
        hit.update(matching)
    kinds: dict[str, tuple[int, int]] = {}
    for fault in faults:
        injected, detected = kinds.get(fault.kind, (0, 0))
        kinds[fault.kind] = (injected + 1, detected + (id(fault) in hit))
    return DetectionScore(len(faults), len(anomalies), explained, len(hit), kinds)
