"""False-positive counting on COCO-style detections (the demo's negative-chip figures)."""

import numpy as np
import pytest

from lab.analysis import false_positive_stats, false_positives_at_recall


def _record(image_id, boxes, distractors=()):
    return {"image_id": image_id, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "distractors": np.asarray(distractors, np.float32).reshape(-1, 4)}


GT = [[0, 0, 10, 10], [100, 100, 120, 120]]
DISTRACTOR = [[200, 200, 240, 240]]


def test_fixed_threshold_counts_detections_off_every_object_and_those_on_distractors():
    records = [_record(1, GT, DISTRACTOR), _record(2, [])]
    dets = {1: (np.array([[0, 0, 10, 10],        # on an object
                          [0, 0, 10, 11],        # a duplicate of it: not firing on a non-object
                          [205, 205, 235, 235],  # on the distractor
                          [400, 400, 410, 410],  # on background
                          [100, 100, 120, 120]]),  # on an object, but below the threshold
                np.array([0.9, 0.8, 0.7, 0.6, 0.3])),
            2: (np.array([[5, 5, 15, 15]]), np.array([0.95]))}  # an image without objects
    out = false_positive_stats(dets, records, score_threshold=0.5)
    assert out["fp_per_image"] == 3 / 2 and out["fp_on_distractors_per_image"] == 1 / 2
    assert out["recall"] == 0.5 and out["images"] == 2


def test_at_recall_picks_the_threshold_where_that_share_of_objects_is_found():
    records = [_record(1, GT + [[300, 300, 330, 330], [500, 500, 540, 540]], DISTRACTOR)]
    boxes = np.array([[0, 0, 10, 10], [205, 205, 235, 235], [100, 100, 120, 120], [400, 400, 420, 420],
                      [300, 300, 330, 330]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    dets = {1: (boxes, scores)}
    half = false_positives_at_recall(dets, records, recall=0.5)  # 2 of 4 objects: at the 0.7 detection
    assert half["score_threshold"] == 0.7 and half["recall"] == 0.5
    assert half["fp_per_image"] == 1 and half["fp_on_distractors_per_image"] == 1
    three = false_positives_at_recall(dets, records, recall=0.75)  # the third object only at 0.2
    assert three["score_threshold"] == 0.2 and three["fp_per_image"] == 2
    # Never reaching it: every detection counts, and the recall reached is reported.
    everything = false_positives_at_recall(dets, records, recall=1.0)
    assert everything["score_threshold"] == 0.0 and everything["recall"] == 0.75 and everything["fp_per_image"] == 2


def test_at_recall_does_not_depend_on_score_calibration():
    records = [_record(1, GT, DISTRACTOR)]
    boxes = np.array([[0, 0, 10, 10], [205, 205, 235, 235], [100, 100, 120, 120]], np.float64)
    scores = np.array([0.9, 0.8, 0.7])
    a = false_positives_at_recall({1: (boxes, scores)}, records, recall=1.0)
    b = false_positives_at_recall({1: (boxes, scores ** 4)}, records, recall=1.0)  # same ranking, lower scores
    assert a["fp_per_image"] == b["fp_per_image"] == 1
    with pytest.raises(ValueError, match="recall"):
        false_positives_at_recall({}, records, recall=0.0)
