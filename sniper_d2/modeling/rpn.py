"""RPN whose anchor labels ignore SNIPER's invalid ground truth."""

import torch
from detectron2.config import configurable
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.memory import retry_if_cuda_oom

from .ignore import max_iou_with, split_valid

__all__ = ["SniperRPN"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class SniperRPN(RPN):
    """detectron2's RPN with one change in :meth:`label_and_sample_anchors`:

    anchors are matched to *valid* ground truth only, and an anchor that is not positive for a
    valid box but overlaps an *invalid* box (an object outside this chip's scale range, a truncated
    object, a crowd region) with IoU above ``SNIPER.RPN_IGNORE_IOU`` is labelled -1 (ignored) instead
    of background: the network is neither rewarded nor punished for firing there.
    """

    @configurable
    def __init__(self, *, ignore_iou_threshold=0.3, **kwargs):
        super().__init__(**kwargs)
        self.ignore_iou_threshold = ignore_iou_threshold

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["ignore_iou_threshold"] = cfg.SNIPER.RPN_IGNORE_IOU
        return ret

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(self, anchors, gt_instances):
        """Same contract as ``RPN.label_and_sample_anchors``; ``gt_instances`` may carry ``gt_valid``.

        Returns:
            list[Tensor]: per image, (R,) labels in {-1, 0, 1} over all anchors (R = sum over levels).
            list[Tensor]: per image, (R, 4) matched valid gt boxes (undefined where label != 1).
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for instances in gt_instances:
            valid, invalid_boxes = split_valid(instances)
            gt_boxes_i = valid.gt_boxes
            match_quality_matrix = retry_if_cuda_oom(pairwise_iou)(gt_boxes_i, anchors)
            matched_idxs, gt_labels_i = retry_if_cuda_oom(self.anchor_matcher)(match_quality_matrix)
            gt_labels_i = gt_labels_i.to(device=gt_boxes_i.device)
            del match_quality_matrix

            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                gt_labels_i[~inside] = -1
            ignore = max_iou_with(anchors, invalid_boxes, pairwise_iou) > self.ignore_iou_threshold
            gt_labels_i[ignore & (gt_labels_i != 1)] = -1
            gt_labels_i = self._subsample_labels(gt_labels_i)

            if len(gt_boxes_i) == 0:
                matched_gt_boxes_i = torch.zeros_like(anchors.tensor)
            else:
                matched_gt_boxes_i = gt_boxes_i[matched_idxs].tensor
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes
