"""Helpers shared by the ignore-aware heads."""

import torch
from detectron2.structures import pairwise_iou

__all__ = ["split_valid", "max_iou_with"]


def split_valid(instances):
    """Split ground truth into valid boxes (positives) and invalid ones (ignore regions).

    Args:
        instances (Instances): with ``gt_boxes`` and optionally ``gt_valid`` ((N,) bool).

    Returns:
        (valid Instances, invalid Boxes). Without ``gt_valid`` every box is valid.
    """
    if not instances.has("gt_valid"):
        return instances, instances.gt_boxes[torch.zeros(0, dtype=torch.long, device=instances.gt_boxes.device)]
    valid = instances.gt_valid.to(torch.bool)
    return instances[valid], instances.gt_boxes[~valid]


def max_iou_with(boxes, others):
    """(R,) float: the largest IoU (detectron2's ``pairwise_iou``) of each of ``boxes`` (Boxes, R)
    with ``others`` (Boxes, M), both XYXY in the same frame; zeros when M == 0."""
    if len(others) == 0:
        return torch.zeros(len(boxes), device=boxes.tensor.device)
    return pairwise_iou(others, boxes).max(dim=0).values
