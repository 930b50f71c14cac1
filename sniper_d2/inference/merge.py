"""Merging detections from tiles and scales: per-class NMS or Gaussian soft-NMS, top K.

One public function, :func:`merge_detections`, used by the evaluator, tools/infer.py and the
benchmarks. Runs on whatever device the tensors are on (CUDA included).
"""

import torch
from torchvision.ops import batched_nms, box_iou

__all__ = ["merge_detections", "soft_nms"]


def _class_offset_boxes(boxes, classes):
    """Shift each class's boxes to a disjoint region so cross-class IoU is 0 (per-class NMS)."""
    if boxes.numel() == 0:
        return boxes
    span = (boxes.max() - boxes.min()).abs() + 1
    return boxes + (classes.to(boxes.dtype) * span)[:, None]


def soft_nms(boxes, scores, classes, sigma=0.55, top_k=500, score_threshold=1e-3):
    """Gaussian soft-NMS per class (Bodla et al. 2017), vectorized over boxes.

    Each step keeps the highest-scoring remaining box and decays the scores of the others of its
    class by ``exp(-iou^2 / sigma)``; it stops after ``top_k`` boxes or when no remaining score
    reaches ``score_threshold``.

    Args:
        boxes: (N, 4) float XYXY; scores: (N,) float; classes: (N,) int.

    Returns:
        (keep (K,) int64 indices into the inputs, new_scores (K,) float), by decreasing new score.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores[:0]
    iou = box_iou(_class_offset_boxes(boxes, classes), _class_offset_boxes(boxes, classes))  # 0 across classes
    current = scores.clone().float()
    alive = torch.ones(n, dtype=torch.bool, device=boxes.device)
    keep, kept_scores = [], []
    neg_inf = torch.tensor(float("-inf"), device=boxes.device)
    for _ in range(min(top_k, n)):
        masked = torch.where(alive, current, neg_inf)
        best = int(torch.argmax(masked))
        best_score = masked[best]
        if not bool(best_score >= score_threshold):
            break
        keep.append(best)
        kept_scores.append(best_score)
        alive[best] = False
        current = current * torch.exp(-(iou[best] ** 2) / sigma)
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores[:0]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device), torch.stack(kept_scores).to(scores.dtype)


def merge_detections(boxes, scores, classes, method="nms", iou_threshold=0.5, top_k=500, sigma=0.55):
    """Merge detections of one image (from several tiles and scales) into the final set.

    Args:
        boxes: (N, 4) float tensor XYXY, all in the same frame (original-image pixels).
        scores: (N,) float tensor. classes: (N,) int64 tensor.
        method (str): "nms" (torchvision ``batched_nms``, per class) or "soft_nms" (Gaussian).
        iou_threshold (float): NMS IoU threshold (unused by soft-NMS).
        top_k (int): detections kept, by decreasing score.
        sigma (float): soft-NMS Gaussian parameter.

    Returns:
        (boxes (K, 4), scores (K,), classes (K,)), K <= top_k, sorted by decreasing score; soft-NMS
        returns the decayed scores.
    """
    if method == "nms":
        keep = batched_nms(boxes.float(), scores.float(), classes, iou_threshold)[:top_k]
        return boxes[keep], scores[keep], classes[keep]
    if method == "soft_nms":
        keep, new_scores = soft_nms(boxes.float(), scores, classes, sigma=sigma, top_k=top_k)
        return boxes[keep], new_scores, classes[keep]
    raise ValueError(f"merge method must be 'nms' or 'soft_nms', got {method!r}")
