"""StandardROIHeads whose proposal sampling leaves out proposals on invalid ground truth."""

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from .ignore import max_iou_with, split_valid

__all__ = ["SniperROIHeads"]


@ROI_HEADS_REGISTRY.register()
class SniperROIHeads(StandardROIHeads):
    """detectron2's StandardROIHeads with one change in :meth:`label_and_sample_proposals`:

    a proposal whose best match over *all* ground truth is an *invalid* box (outside this chip's
    scale range, truncated, or a crowd region) with IoU >= ``SNIPER.ROI_IGNORE_IOU`` is left out of
    sampling: it is neither foreground nor background. The rest is stock detectron2 run on the
    *valid* boxes only, so only valid boxes are matched and only valid boxes are added as proposals
    (``ROI_HEADS.PROPOSAL_APPEND_GT``). A tie between a valid and an invalid box goes to the valid one.
    """

    @configurable
    def __init__(self, *, ignore_iou_threshold=0.5, **kwargs):
        """
        Args:
            ignore_iou_threshold (float): IoU with its best-matching invalid box from which a
                proposal is left out (default: the foreground threshold of stock Faster R-CNN).
            kwargs: as for ``StandardROIHeads``.
        """
        super().__init__(**kwargs)
        self.ignore_iou_threshold = ignore_iou_threshold

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["ignore_iou_threshold"] = cfg.SNIPER.ROI_IGNORE_IOU
        return ret

    def _drop_ignored(self, proposals, valid, invalid_boxes):
        """``proposals`` (Instances) minus those whose best match is an invalid box."""
        if len(invalid_boxes) == 0 or len(proposals) == 0:
            return proposals
        boxes = proposals.proposal_boxes
        iou_invalid = max_iou_with(boxes, invalid_boxes)
        iou_valid = max_iou_with(boxes, valid.gt_boxes)
        ignored = (iou_invalid > iou_valid) & (iou_invalid >= self.ignore_iou_threshold)
        return proposals[~ignored]

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals, targets):
        """Same contract as ``StandardROIHeads.label_and_sample_proposals``; ``targets`` may carry
        ``gt_valid`` ((G,) bool; all valid when absent, which gives exactly the stock result)."""
        split = [split_valid(t) for t in targets]
        proposals = [self._drop_ignored(p, valid, invalid) for p, (valid, invalid) in zip(proposals, split)]
        return super().label_and_sample_proposals(proposals, [valid for valid, _ in split])
