"""Per-class thresholds chosen on the validation split (best F1), by hand-counted examples."""
from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="baselines need the [baselines] extra")

from baselines.calibrate import best_f1_threshold, classifier_thresholds, detector_thresholds  # noqa: E402


def test_best_f1_cut_by_hand():
    # scores 0.9 (right), 0.8 (wrong), 0.7 (right), 0.2 (right); 4 to find.
    # cut at 0.9: P 1, R 1/4, F1 0.4; at 0.8: P 1/2, R 1/4, F1 1/3; at 0.7: P 2/3, R 1/2, F1 4/7;
    # at 0.2: P 3/4, R 3/4, F1 0.75 -> the lowest cut wins.
    threshold, f1 = best_f1_threshold([0.9, 0.8, 0.7, 0.2], [True, False, True, True], 4)
    assert threshold == 0.2 and f1 == pytest.approx(0.75)
    # only the top output right, one to find: the highest cut is perfect
    assert best_f1_threshold([0.9, 0.8, 0.7, 0.2], [True, False, False, False], 1) == (0.9, 1.0)
    assert best_f1_threshold([], [], 3) is None and best_f1_threshold([0.5], [True], 0) is None
    # equal scores are kept or dropped together
    assert best_f1_threshold([0.6, 0.6, 0.1], [True, False, True], 2) == (0.1, pytest.approx(0.8))
    assert best_f1_threshold([0.6, 0.6], [False, True], 1) == (0.6, pytest.approx(2 / 3))


def test_classifier_thresholds_per_predicted_class():
    classes = ["a", "b"]
    truth = [0, 0, 1, 1, 0]
    scores = [[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.3, 0.7]]
    # predicted a: rows 0 (0.9 right), 1 (0.6 right), 2 (0.55 wrong); 3 a's to find -> best at 0.6 (P 1, R 2/3)
    # predicted b: rows 3 (0.8 right), 4 (0.7 wrong); 2 b's -> at 0.8: P 1, R 1/2 = 0.667; at 0.7: P 1/2 R 1/2 = 0.5
    assert classifier_thresholds(truth, scores, classes) == {"a": 0.6, "b": 0.8}


def test_detector_thresholds_match_boxes_greedily_at_iou_half():
    truth = [{"boxes": [[0, 0, 10, 10], [50, 50, 10, 10]], "labels": [0, 0]}]
    predictions = [{"boxes": [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10], [200, 200, 5, 5]],
                    "labels": [0, 0, 0, 1], "scores": [0.9, 0.8, 0.4, 0.7]}]
    # class 0: 0.9 right, 0.8 takes no box (the one it overlaps is taken), 0.4 right; 2 to find
    # cuts: 0.9 -> F1 2/3; 0.8 -> P 1/2 R 1/2 = 0.5; 0.4 -> P 2/3 R 1 = 0.8 -> 0.4
    # class 1: one box, nothing to find -> no threshold (the default applies)
    assert detector_thresholds(truth, predictions, ["head", "arms"]) == {"head": 0.4}
