"""Error analysis on COCO-format detections: false positives, and how many sit on distractors.

Numpy only. Detections are COCO results (``[{"image_id", "category_id", "bbox" XYWH, "score"}]``,
as detectron2's COCOEvaluator writes to ``coco_instances_results.json``).
"""

import json

import numpy as np

from .coco import boxes_xywh_to_xyxy

__all__ = ["pairwise_iou_np", "false_positive_stats", "load_coco_results"]


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


def false_positive_stats(detections, records, score_threshold=0.5, iou_threshold=0.5, distractor_iof=0.5):
    """False positives per image, and those lying on the generator's distractors.

    A detection (score >= ``score_threshold``) is a false positive when its IoU with every ground-truth
    box is below ``iou_threshold`` (class-agnostic: this counts firing on non-objects). It is *on a
    distractor* when at least ``distractor_iof`` of its area lies inside one distractor region.

    Args:
        detections: {image_id: (boxes (N, 4) XYXY original pixels, scores (N,))}.
        records: data set records (``sniper_d2.coco.load_coco_records``) with ``distractors``.

    Returns:
        dict: ``fp_per_image``, ``fp_on_distractors_per_image``, ``images``.
    """
    fps, on_dis = 0, 0
    for rec in records:
        boxes, scores = detections.get(rec["image_id"], (np.zeros((0, 4)), np.zeros(0)))
        boxes = boxes[scores >= score_threshold]
        if len(boxes) == 0:
            continue
        gt = rec["boxes"]
        matched = pairwise_iou_np(boxes, gt).max(axis=1) >= iou_threshold if len(gt) else np.zeros(len(boxes), bool)
        fp = boxes[~matched]
        fps += len(fp)
        if len(fp) and len(rec["distractors"]):
            d = rec["distractors"]
            lt = np.maximum(fp[:, None, :2], d[None, :, :2])
            rb = np.minimum(fp[:, None, 2:], d[None, :, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
            area = np.maximum(np.prod(fp[:, 2:] - fp[:, :2], axis=1), 1e-12)
            on_dis += int(((inter / area[:, None]) >= distractor_iof).any(axis=1).sum())
    n = max(1, len(records))
    return {"fp_per_image": fps / n, "fp_on_distractors_per_image": on_dis / n, "images": len(records)}
