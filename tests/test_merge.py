"""merge_detections: per-class NMS and nested-box NMS equal brute-force references; soft-NMS decays as specified."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sniper_d2.inference import merge_detections, soft_nms


def random_detections(n, seed, image_side, classes):
    """(boxes (n, 4) float32 XYXY, scores (n,) float32, classes (n,) int64): boxes in clusters of about
    eight near-duplicates, as overlapping tiles and scales produce them."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, image_side, (n // 8 + 1, 2))[rng.integers(0, n // 8 + 1, n)]
    half = rng.uniform(4, 60, (n, 2))
    boxes = np.hstack([centres - half, centres + half]) + rng.normal(0, 3, (n, 1))
    return boxes.astype(np.float32), rng.random(n).astype(np.float32), rng.integers(0, classes, n)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 120), seed=st.integers(0, 10_000), thr=st.sampled_from([0.3, 0.5, 0.7]))
def test_nms_keeps_exactly_what_brute_force_keeps(n, seed, thr):
    boxes, scores, classes = random_detections(n, seed=seed, image_side=300, classes=3)
    keep_ref = python_nms(boxes.tolist(), scores.tolist(), classes.tolist(), thr)
    b, s, c = merge_detections(torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(classes),
                               "nms", thr, top_k=10_000)
    assert sorted(map(tuple, b.tolist())) == sorted(map(tuple, boxes[keep_ref].tolist()))
    assert (s[:-1] >= s[1:]).all(), "sorted by decreasing score"


def test_nms_is_per_class_and_top_k_keeps_the_best():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    classes = torch.tensor([0, 1, 0, 0])
    b, s, c = merge_detections(boxes, scores, classes, "nms", 0.5, top_k=10)
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.6]) and c.tolist() == [0, 1, 0]
    b, s, c = merge_detections(boxes, scores, classes, "nms", 0.5, top_k=2)
    assert s.tolist() == pytest.approx([0.9, 0.8])


def slow_soft_nms(boxes, scores, classes, sigma, top_k, threshold):
    scores = list(scores)
    alive = set(range(len(boxes)))
    out = []
    while alive and len(out) < top_k:
        best = max(alive, key=lambda i: scores[i])
        if scores[best] < threshold:
            break
        out.append((best, scores[best]))
        alive.remove(best)
        for j in alive:
            if classes[j] == classes[best]:
                scores[j] *= math.exp(-_iou(boxes[best], boxes[j]) ** 2 / sigma)
    return out


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 10_000))
def test_soft_nms_matches_a_slow_reference(n, seed):
    boxes, scores, classes = random_detections(n, seed=seed, image_side=200, classes=2)
    ref = slow_soft_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.55, 25, 1e-3)
    keep, new_scores = soft_nms(torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(classes),
                                sigma=0.55, top_k=25, score_threshold=1e-3)
    assert keep.tolist() == [i for i, _ in ref]
    np.testing.assert_allclose(new_scores.numpy(), [s for _, s in ref], rtol=1e-5)


def test_soft_nms_decays_instead_of_removing():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9]], dtype=torch.float32)
    b, s, _ = merge_detections(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), "soft_nms", sigma=0.5)
    assert len(b) == 2 and s[1] == pytest.approx(0.8 * math.exp(-(0.9 ** 2) / 0.5), rel=1e-5)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="'nms', 'soft_nms', 'nested_nms'"):
        merge_detections(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long), "wbf")


def brute_force_nested_nms(boxes, scores, classes, iou_thr, ios_thr, top_k):
    """The definition, one pair at a time: in score order (ties: lower index first), keep a box unless a
    kept box of its class has IoU > iou_thr or intersection / smaller area > ios_thr with it."""
    def inter(a, b):
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    def area(a):
        return max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])

    kept = []
    for j in sorted(range(len(boxes)), key=lambda i: (-scores[i], i)):
        if len(kept) == top_k:
            break
        if not any(classes[i] == classes[j] and inter(boxes[i], boxes[j]) > 0 and (
                   inter(boxes[i], boxes[j]) > iou_thr * (area(boxes[i]) + area(boxes[j]) - inter(boxes[i], boxes[j]))
                   or inter(boxes[i], boxes[j]) > ios_thr * min(area(boxes[i]), area(boxes[j]))) for i in kept):
            kept.append(j)
    return kept


def python_nms(boxes, scores, classes, iou_thr):
    """Plain per-class NMS by the definition: nested NMS without the intersection-over-smaller rule
    and without a cap. Returns kept indices in score order."""
    return brute_force_nested_nms(boxes, scores, classes, iou_thr, math.inf, len(boxes) + 1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 150), seed=st.integers(0, 10_000), iou=st.sampled_from([0.3, 0.5]),
       ios=st.sampled_from([0.5, 0.8, 0.95]), top_k=st.sampled_from([5, 1000]), block=st.sampled_from([1, 7, 1024]),
       tied=st.booleans())
def test_nested_nms_keeps_exactly_what_brute_force_keeps(n, seed, iou, ios, top_k, block, tied):
    boxes, scores, classes = random_detections(n, seed=seed, image_side=200, classes=2)
    if tied:  # equal scores: the order between them is the input order
        scores = np.round(scores, 1).astype(np.float32)
    ref = brute_force_nested_nms(boxes.tolist(), scores.tolist(), classes.tolist(), iou, ios, top_k)
    from sniper_d2.inference.merge import nested_nms

    keep = nested_nms(torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(classes), iou, ios, top_k,
                      block=block)
    assert keep.tolist() == ref


def test_nested_nms_removes_a_box_inside_a_better_one_that_nms_keeps():
    whole = [0, 0, 100, 100]
    fragment = [10, 10, 50, 60]  # IoU 0.2, but wholly inside
    other_class = [10, 10, 50, 60]
    boxes = torch.tensor([whole, fragment, other_class], dtype=torch.float32)
    scores, classes = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1])
    assert len(merge_detections(boxes, scores, classes, "nms", 0.5)[0]) == 3
    b, s, c = merge_detections(boxes, scores, classes, "nested_nms", 0.5, ios_threshold=0.8)
    assert b.tolist() == [whole, other_class] and c.tolist() == [0, 1]


def test_cross_class_merge_keeps_the_highest_scoring_class_per_object():
    square = [10, 10, 50, 50]
    boxes = torch.tensor([square, [11, 11, 51, 50], [100, 100, 140, 140], [101, 100, 140, 141], [200, 0, 230, 30]],
                         dtype=torch.float32)
    scores = torch.tensor([0.6, 0.9, 0.8, 0.7, 0.5])  # object 1: class 1 wins; object 2: class 0 wins
    classes = torch.tensor([0, 1, 0, 2, 1])
    for method in ("nms", "nested_nms", "soft_nms"):
        assert len(merge_detections(boxes, scores, classes, method, 0.5)[0]) == 5, "off: classes never compete"
        b, s, c = merge_detections(boxes, scores, classes, method, 0.5, cross_class_iou=0.7)
        assert c.tolist() == [1, 0, 1] and s.tolist() == pytest.approx([0.9, 0.8, 0.5]), method
        assert b.tolist() == [[11, 11, 51, 50], [100, 100, 140, 140], [200, 0, 230, 30]]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 120), seed=st.integers(0, 10_000), thr=st.sampled_from([0.3, 0.5, 0.7]),
       cross=st.sampled_from([0.5, 0.8]))
def test_cross_class_merge_equals_per_class_then_class_agnostic_brute_force(n, seed, thr, cross):
    boxes, scores, classes = random_detections(n, seed=seed, image_side=300, classes=3)
    per_class = python_nms(boxes.tolist(), scores.tolist(), classes.tolist(), thr)
    survivors = boxes[per_class]
    agnostic = python_nms(survivors.tolist(), scores[per_class].tolist(), [0] * len(per_class), cross)
    b, s, c = merge_detections(torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(classes),
                               "nms", thr, top_k=10_000, cross_class_iou=cross)
    assert sorted(map(tuple, b.tolist())) == sorted(map(tuple, survivors[agnostic].tolist()))
    assert (s[:-1] >= s[1:]).all(), "sorted by decreasing score"
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    wh = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - lt).clamp(min=0)
    area = (b[:, 2:] - b[:, :2]).prod(1)
    inter = wh.prod(-1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    assert not (iou.triu(1) > cross).any(), "no two kept boxes of any classes overlap above the threshold"


def test_cross_class_iou_out_of_range_is_refused():
    with pytest.raises(ValueError, match="cross-class IoU threshold"):
        merge_detections(torch.zeros((1, 4)), torch.ones(1), torch.zeros(1, dtype=torch.long), "nms",
                         cross_class_iou=1.5)


def test_the_predictor_merges_across_classes_when_the_config_asks():
    from detectron2.config import get_cfg

    from sniper_d2.config import add_sniper_config
    from sniper_d2.config_types import ConfigError
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams

    cfg = get_cfg()
    add_sniper_config(cfg)
    assert TiledInferenceParams.from_cfg(cfg).cross_class_iou == -1.0, "off by default"
    cfg.SNIPER.TEST.CROSS_CLASS_IOU = 0.6
    params = TiledInferenceParams.from_cfg(cfg)
    parts = [(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([0.7]), torch.tensor([0])),
             (torch.tensor([[0.0, 0.0, 10.0, 11.0]]), torch.tensor([0.8]), torch.tensor([2]))]
    det = MultiScaleTiledPredictor(None, params).merge(parts)
    assert det["classes"].tolist() == [2] and det["scores"].tolist() == pytest.approx([0.8])
    cfg.SNIPER.TEST.CROSS_CLASS_IOU = 0.0
    with pytest.raises(ConfigError, match="CROSS_CLASS_IOU"):
        TiledInferenceParams.from_cfg(cfg)
