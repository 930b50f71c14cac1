"""Merging detections from tiles and scales: per-class NMS or Gaussian soft-NMS, top K.

One public function, :func:`merge_detections`, used by the evaluator, tools/infer.py and the
benchmarks. Everything runs on the device the tensors are on (CUDA included) and is vectorized over
boxes; soft-NMS's greedy picks are the only loop (``top_k`` iterations of O(N) work, no N x N
matrix, no host synchronisation inside the loop).
"""

import torch
from torchvision.ops import batched_nms

__all__ = ["merge_detections", "soft_nms"]

METHODS = ("nms", "soft_nms")


def _check_inputs(boxes, scores, classes):
    n = boxes.shape[0] if boxes.dim() == 2 else -1
    if boxes.dim() != 2 or boxes.shape[1] != 4 or scores.shape != (n,) or classes.shape != (n,):
        raise ValueError(f"expected boxes (N, 4), scores (N,), classes (N,); got {tuple(boxes.shape)}, "
                         f"{tuple(scores.shape)}, {tuple(classes.shape)}")


def soft_nms(boxes, scores, classes, sigma=0.55, top_k=500, score_threshold=1e-3):
    """Gaussian soft-NMS per class (Bodla et al., ICCV 2017).

    Greedy: pick the highest remaining score; multiply the scores of the remaining boxes of the same
    class by ``exp(-iou^2 / sigma)``; repeat ``min(top_k, N)`` times. Picks come out in
    non-increasing score order, so picks below ``score_threshold`` are cut off at the end.

    Args:
        boxes: (N, 4) float XYXY (any frame, the same for all boxes).
        scores: (N,) float. classes: (N,) int64.
        sigma (float): Gaussian parameter (> 0); smaller decays overlapping boxes harder.
        top_k (int): at most this many boxes are picked.
        score_threshold (float): picks whose decayed score is below this are dropped.

    Returns:
        keep: (K,) int64 indices into the inputs, K <= top_k, by decreasing decayed score;
        new_scores: (K,) the decayed scores, dtype of ``scores``.
    """
    _check_inputs(boxes, scores, classes)
    if sigma <= 0:
        raise ValueError(f"soft-NMS sigma must be > 0, got {sigma}")
    k = min(int(top_k), boxes.shape[0])
    device = boxes.device
    keep = torch.empty(k, dtype=torch.long, device=device)
    picked = torch.empty(k, dtype=torch.float32, device=device)
    boxes = boxes.float()
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    current = scores.float().clone()
    for i in range(k):
        best = torch.argmax(current).view(1)  # ties: the lowest index, as a stable greedy does
        keep[i:i + 1] = best
        picked[i:i + 1] = current.index_select(0, best)
        b = boxes.index_select(0, best)
        wh = (torch.minimum(boxes[:, 2:], b[:, 2:]) - torch.maximum(boxes[:, :2], b[:, :2])).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (areas + areas.index_select(0, best) - inter).clamp(min=1e-12)
        same_class = classes == classes.index_select(0, best)
        current = torch.where(same_class, current * torch.exp(-(iou * iou) / sigma), current)
        current.index_fill_(0, best, float("-inf"))  # picked: never again
    n_valid = int((picked >= score_threshold).sum())  # picks are non-increasing: a prefix is valid
    return keep[:n_valid], picked[:n_valid].to(scores.dtype)


def merge_detections(boxes, scores, classes, method="nms", iou_threshold=0.5, top_k=500, sigma=0.55):
    """Merge the detections of one image (from several tiles and scales) into its final set.

    Args:
        boxes: (N, 4) float tensor XYXY, all in one frame (original-image pixels).
        scores: (N,) float tensor.
        classes: (N,) int64 tensor; boxes of different classes never suppress each other.
        method (str): "nms" (torchvision ``batched_nms``, per class) or "soft_nms" (Gaussian,
            per class, :func:`soft_nms`).
        iou_threshold (float): NMS IoU threshold: a box whose IoU with a higher-scoring box of its
            class exceeds this is removed (unused by soft-NMS).
        top_k (int): detections kept, by decreasing (decayed) score.
        sigma (float): soft-NMS Gaussian parameter (unused by NMS).

    Returns:
        (boxes (K, 4), scores (K,), classes (K,)) on the input device, K <= top_k, sorted by
        decreasing score; soft-NMS returns the decayed scores.
    """
    if method not in METHODS:
        raise ValueError(f"merge method must be 'nms' or 'soft_nms', got {method!r}")
    _check_inputs(boxes, scores, classes)
    if method == "nms":
        keep = batched_nms(boxes.float(), scores.float(), classes, iou_threshold)[:top_k]
        return boxes[keep], scores[keep], classes[keep]
    keep, new_scores = soft_nms(boxes, scores, classes, sigma=sigma, top_k=top_k)
    return boxes[keep], new_scores, classes[keep]
