"""Merging detections from tiles and scales: per-class NMS, nested-box NMS or soft-NMS, an optional
cross-class step, top K.

One public function, :func:`merge_detections`, used by the evaluator, tools/infer.py and the
benchmarks. Everything runs on the device the tensors are on (CUDA included) and is vectorized over
boxes. Soft-NMS's greedy picks are a loop of ``top_k`` iterations of O(N) work (no N x N matrix, no
host synchronisation inside the loop). Nested-box NMS (:func:`nested_nms`) walks the boxes in score
order in blocks of ``block`` boxes: (kept so far) x block and block x block matrices, at most
``top_k`` kept, so memory stays bounded whatever N. The cross-class step
(:func:`cross_class_merge`, SAHI's "class-agnostic" postprocessing) runs after the per-class merge:
one torchvision ``nms`` over the survivors of all classes, so one object claimed by two classes keeps
only its highest-scoring class.
"""

import torch
from torchvision.ops import batched_nms, nms

__all__ = ["merge_detections", "soft_nms", "nested_nms", "cross_class_merge"]

METHODS = ("nms", "soft_nms", "nested_nms")


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


def _suppresses(kept_boxes, kept_classes, boxes, classes, iou_threshold, ios_threshold):
    """(K, M) bool: kept box i suppresses box j (same class, and IoU > iou_threshold or intersection
    over the smaller box's area > ios_threshold). Boxes XYXY float, one frame."""
    lt = torch.maximum(kept_boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(kept_boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_k = ((kept_boxes[:, 2] - kept_boxes[:, 0]).clamp(min=0) * (kept_boxes[:, 3] - kept_boxes[:, 1]).clamp(min=0))
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    union = area_k[:, None] + area[None, :] - inter
    smaller = torch.minimum(area_k[:, None], area[None, :])
    hit = (inter > iou_threshold * union) | (inter > ios_threshold * smaller)
    hit &= inter > 0  # empty boxes suppress nothing and are suppressed by nothing
    return hit & (kept_classes[:, None] == classes[None, :])


def nested_nms(boxes, scores, classes, iou_threshold=0.5, ios_threshold=0.8, top_k=500, block=128):
    """Greedy per-class NMS that also removes boxes nested in a kept one.

    In decreasing score order (ties: lower index first), a box is kept unless a kept box of its class
    overlaps it with IoU > ``iou_threshold`` or with an intersection larger than ``ios_threshold`` of
    the smaller box's area (SAHI's "IOS" match metric). A fragment of an object detected at a fine
    scale inside the whole object's box found at a coarser scale, or a box cut by a tile next to the
    whole box from the neighbouring tile, overlaps little in IoU but almost wholly in IOS.

    Exact greedy, vectorized by blocks: each block of ``block`` candidates (in score order) is first
    tested against the boxes kept so far ((K, B) matrix, K <= top_k), then resolved inside itself by
    a fixed-point iteration on its (B, B) matrix (``keep_j = alive_j and no kept i < j suppresses j``;
    iteration t fixes the first t boxes, it stops when nothing changes). Stops once ``top_k`` boxes are
    kept.

    Args:
        boxes: (N, 4) float XYXY (one frame). scores: (N,) float. classes: (N,) int64.
        iou_threshold (float), ios_threshold (float): in [0, 1].
        top_k (int): at most this many boxes are kept. block (int): candidates per block.

    Returns:
        keep: (K,) int64 indices into the inputs, K <= top_k, by decreasing score.
    """
    _check_inputs(boxes, scores, classes)
    device = boxes.device
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes.float()
    kept = torch.empty(0, dtype=torch.long, device=device)
    for start in range(0, order.numel(), block):
        if kept.numel() >= top_k:
            break
        idx = order[start:start + block]
        b, c = boxes[idx], classes[idx]
        alive = ~_suppresses(boxes[kept], classes[kept], b, c, iou_threshold, ios_threshold).any(0)
        inner = _suppresses(b, c, b, c, iou_threshold, ios_threshold).triu(diagonal=1).float()
        keep = alive
        while True:
            new = alive & ((keep.float() @ inner) == 0)
            if torch.equal(new, keep):
                break
            keep = new
        kept = torch.cat([kept, idx[keep]])
    return kept[:top_k]


def cross_class_merge(boxes, scores, iou_threshold):
    """One box per object whatever its class: class-agnostic greedy NMS (torchvision ``nms``).

    Meant for detections already merged per class: where boxes of different classes overlap with
    IoU > ``iou_threshold`` (one object claimed by two classes, e.g. a square also called "disk"), only
    the highest-scoring one stays, with its class.

    Args:
        boxes: (N, 4) float XYXY (one frame). scores: (N,) float.
        iou_threshold (float): in (0, 1].

    Returns:
        keep: (K,) int64 indices into the inputs, by decreasing score (ties: torchvision's order).
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"cross-class IoU threshold must be in (0, 1], got {iou_threshold}")
    return nms(boxes.float(), scores.float(), float(iou_threshold))


def merge_detections(boxes, scores, classes, method="nms", iou_threshold=0.5, top_k=500, sigma=0.55,
                     ios_threshold=0.8, cross_class_iou=None):
    """Merge the detections of one image (from several tiles and scales) into its final set.

    Args:
        boxes: (N, 4) float tensor XYXY, all in one frame (original-image pixels).
        scores: (N,) float tensor.
        classes: (N,) int64 tensor; boxes of different classes never suppress each other.
        method (str): "nms" (torchvision ``batched_nms``, per class), "nested_nms" (NMS that also
            removes a box mostly inside a kept one, :func:`nested_nms`) or "soft_nms" (Gaussian, per
            class, :func:`soft_nms`).
        iou_threshold (float): NMS IoU threshold: a box whose IoU with a higher-scoring box of its
            class exceeds this is removed (unused by soft-NMS).
        top_k (int): detections kept, by decreasing (decayed) score.
        sigma (float): soft-NMS Gaussian parameter (unused by NMS).
        ios_threshold (float): nested-box NMS: a box whose intersection with a kept box of its class
            exceeds this fraction of the smaller box's area is removed (unused by the others).
        cross_class_iou (float or None): after the per-class merge, a box whose IoU with a
            higher-scoring kept box of ANY class exceeds this is removed (:func:`cross_class_merge`);
            None (or a value <= 0): boxes of different classes never suppress each other.

    Returns:
        (boxes (K, 4), scores (K,), classes (K,)) on the input device, K <= top_k, sorted by
        decreasing score; soft-NMS returns the decayed scores.
    """
    if method not in METHODS:
        raise ValueError(f"merge method must be one of {METHODS}, got {method!r}")
    _check_inputs(boxes, scores, classes)
    if method == "nms":
        keep = batched_nms(boxes.float(), scores.float(), classes, iou_threshold)[:top_k]
        new_scores = scores[keep]
    elif method == "nested_nms":
        keep = nested_nms(boxes, scores, classes, iou_threshold, ios_threshold, top_k)
        new_scores = scores[keep]
    else:
        keep, new_scores = soft_nms(boxes, scores, classes, sigma=sigma, top_k=top_k)
    boxes, classes = boxes[keep], classes[keep]
    if cross_class_iou is not None and cross_class_iou > 0:
        keep = cross_class_merge(boxes, new_scores, cross_class_iou)
        boxes, new_scores, classes = boxes[keep], new_scores[keep], classes[keep]
    return boxes, new_scores, classes
