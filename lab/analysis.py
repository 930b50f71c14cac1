"""Error analysis on COCO-format detections: false positives, and how many sit on distractors.

Numpy only. Detections are COCO results (``[{"image_id", "category_id", "bbox" XYWH, "score"}]``,
as detectron2's COCOEvaluator writes to ``coco_instances_results.json``).
"""

import json

import numpy as np

from sniper_d2.chips import fraction_inside
from sniper_d2.coco import boxes_xywh_to_xyxy

__all__ = ["pairwise_iou_np", "false_positive_stats", "false_positives_at_recall", "load_coco_results"]


def pairwise_iou_np(a, b):
    """(N, M) IoU of XYXY boxes a (N, 4) and b (M, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def load_coco_results(path):
    """COCO results json -> {image_id: (boxes (N, 4) XYXY, scores (N,))}."""
    with open(path) as f:
        results = json.load(f)
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append((r["bbox"], r["score"]))
    return {k: (boxes_xywh_to_xyxy([b for b, _ in v]), np.array([s for _, s in v], np.float32))
            for k, v in by_image.items()}


def _label_image(boxes, scores, gt, distractors, iou_threshold, distractor_iof):
    """Class-agnostic labels of one image's detections.

    Returns:
        is_fp (N,) bool: IoU < ``iou_threshold`` with every ground-truth box (firing on a non-object;
            a duplicate of a found object is not counted). on_distractor (N,) bool: at least
            ``distractor_iof`` of the box lies inside one distractor region. found_at (G,) float:
            per ground-truth box, the best score of a detection with IoU >= ``iou_threshold``
            (-inf when none).
    """
    if len(gt):
        hits = pairwise_iou_np(boxes, gt) >= iou_threshold  # (N, G)
        is_fp = ~hits.any(axis=1)
        found_at = np.where(hits, scores[:, None], -np.inf).max(axis=0, initial=-np.inf)
    else:
        is_fp, found_at = np.ones(len(boxes), bool), np.zeros(0)
    on_distractor = (fraction_inside(boxes, distractors) >= distractor_iof).any(axis=1)
    return is_fp, on_distractor, found_at


def _pooled_labels(detections, records, iou_threshold, distractor_iof):
    """All images' detections pooled: scores, is_fp, on_distractor (N,), found_at (G,)."""
    parts = []
    for rec in records:
        boxes, scores = detections.get(rec["image_id"], (np.zeros((0, 4)), np.zeros(0)))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        labels = _label_image(boxes, scores, rec["boxes"], rec.get("distractors", np.zeros((0, 4))),
                              iou_threshold, distractor_iof)
        parts.append((scores,) + labels)
    if not parts:
        return np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def false_positive_stats(detections, records, score_threshold=0.5, iou_threshold=0.5, distractor_iof=0.5):
    """False positives per image at a score threshold, and those lying on the generator's distractors.

    A detection (score >= ``score_threshold``) is a false positive when its IoU with every ground-truth
    box is below ``iou_threshold`` (class-agnostic: this counts firing on non-objects). It is *on a
    distractor* when at least ``distractor_iof`` of its area lies inside one distractor region.

    Args:
        detections: {image_id: (boxes (N, 4) XYXY original pixels, scores (N,))}.
        records: data set records (``sniper_d2.coco.load_coco_records``) with ``distractors``.

    Returns:
        dict: ``fp_per_image``, ``fp_on_distractors_per_image``, ``recall`` (fraction of objects
        found at this threshold), ``score_threshold``, ``images``.
    """
    pooled = _pooled_labels(detections, records, iou_threshold, distractor_iof)
    return _stats_at(pooled, score_threshold, len(records))


def _stats_at(pooled, score_threshold, num_images):
    """:func:`false_positive_stats` from pooled labels (see :func:`_pooled_labels`)."""
    scores, is_fp, on_dis, found_at = pooled
    kept = scores >= score_threshold
    n = max(1, num_images)
    return {"fp_per_image": float((kept & is_fp).sum()) / n,
            "fp_on_distractors_per_image": float((kept & is_fp & on_dis).sum()) / n,
            "recall": float((found_at >= score_threshold).mean()) if len(found_at) else float("nan"),
            "score_threshold": float(score_threshold), "images": num_images}


def false_positives_at_recall(detections, records, recall=0.5, iou_threshold=0.5, distractor_iof=0.5):
    """False positives per image at the score threshold where the detector first finds ``recall`` of
    the objects: a comparison between models that does not depend on how their scores are calibrated.

    Args:
        detections, records, iou_threshold, distractor_iof: as in :func:`false_positive_stats`.
        recall (float): in (0, 1].

    Returns:
        dict as :func:`false_positive_stats`; ``score_threshold`` is the score of the detection that
        reaches ``recall``. When the detector never reaches it, every detection is counted,
        ``recall`` is the highest it reaches and ``score_threshold`` is 0.
    """
    if not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    pooled = _pooled_labels(detections, records, iou_threshold, distractor_iof)
    found_at = pooled[3]
    needed = int(np.ceil(recall * len(found_at)))
    ranked = np.sort(found_at)[::-1]
    threshold = float(ranked[needed - 1]) if 0 < needed <= len(ranked) and np.isfinite(ranked[needed - 1]) else 0.0
    return _stats_at(pooled, threshold, len(records))
