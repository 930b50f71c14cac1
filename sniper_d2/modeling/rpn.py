"""RPN whose anchor labels ignore SNIPER's invalid ground truth."""

import torch
from detectron2.config import configurable
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.structures import Boxes

from .ignore import max_iou_with, split_valid

__all__ = ["SniperRPN"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class SniperRPN(RPN):
    """detectron2's RPN with one change in :meth:`label_and_sample_anchors` (and, for it, in
    :meth:`_subsample_labels`):

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

    def _subsample_labels(self, label):
        """No sampling where the parent samples: :meth:`label_and_sample_anchors` samples (with
        ``RPN._subsample_labels``) after it has marked the anchors on invalid boxes, so that ignored
        anchors never take a place in the ``BATCH_SIZE_PER_IMAGE`` sample."""
        return label

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(self, anchors, gt_instances):
        """Same contract as ``RPN.label_and_sample_anchors``; ``gt_instances`` may carry ``gt_valid``.

        The parent labels the anchors against the *valid* boxes (its matcher and boundary rule,
        unsampled); then anchors that are not positive and overlap an invalid box with IoU above
        ``ignore_iou_threshold`` become -1; then the parent's sampling runs.

        Returns:
            list[Tensor]: per image, (R,) labels in {-1, 0, 1} over all anchors (R = sum over levels).
            list[Tensor]: per image, (R, 4) matched valid gt boxes (undefined where label != 1).
        """
        split = [split_valid(instances) for instances in gt_instances]
        gt_labels, matched_gt_boxes = super().label_and_sample_anchors(anchors, [valid for valid, _ in split])
        anchors = Boxes.cat(anchors)
        for labels_i, (_, invalid_boxes) in zip(gt_labels, split):
            ignore = max_iou_with(anchors, invalid_boxes) > self.ignore_iou_threshold
            labels_i[ignore & (labels_i != 1)] = -1
            super()._subsample_labels(labels_i)  # in place
        return gt_labels, matched_gt_boxes
