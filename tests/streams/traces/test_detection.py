"""Precision and recall of detection, on a hand-made case."""

from __future__ import annotations

from streams.traces.detection import score_detection
from streams.traces.faulty_primary import Fault


def test_precision_and_recall_by_the_window_rule() -> None:
    faults = [Fault("a", "r", 10, "dropped_event"), Fault("a", "r", 50, "corrupt_variable"),
              Fault("b", "r", 5, "missing_variable")]
    anomalies = [("a", 10), ("a", 19), ("a", 21), ("b", 4), ("c", 7)]
    score = score_detection(faults, anomalies, window=10)
    # ("a", 10) and ("a", 19) are explained by the fault at 10; ("a", 21) is past its window,
    # ("b", 4) comes before b's fault, ("c", 7) has no fault at all.
    assert (score.explained, score.anomalies) == (2, 5)
    assert score.precision == 0.4
    assert (score.detected, score.faults) == (1, 3)
    assert score.by_kind == {"dropped_event": (1, 1), "corrupt_variable": (1, 0),
                             "missing_variable": (1, 0)}


def test_nothing_to_find_and_nothing_found_is_perfect() -> None:
    score = score_detection([], [], window=5)
    assert score.precision == score.recall == 1.0
