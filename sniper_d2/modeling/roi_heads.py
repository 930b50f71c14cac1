"""StandardROIHeads whose proposal sampling leaves out proposals on invalid ground truth."""

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import pairwise_iou
from detectron2.utils.events import get_event_storage

from .ignore import split_valid

__all__ = ["SniperROIHeads"]


@ROI_HEADS_REGISTRY.register()
class SniperROIHeads(StandardROIHeads):
    """detectron2's StandardROIHeads with one change in :meth:`label_and_sample_proposals`:

    proposals are matched to *valid* ground truth only; a proposal whose best match over all ground
    truth is an *invalid* box with IoU >= ``SNIPER.ROI_IGNORE_IOU`` is left out of sampling (it is
    neither foreground nor background), and only valid boxes are added as extra proposals.
    """

    @configurable
    def __init__(self, *, ignore_iou_threshold=0.5, **kwargs):
        super().__init__(**kwargs)
        self.ignore_iou_threshold = ignore_iou_threshold

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["ignore_iou_threshold"] = cfg.SNIPER.ROI_IGNORE_IOU
        return ret

    def _drop_ignored(self, proposals_i, targets_i, invalid_boxes):
        """Proposals (Instances) minus those whose best match is an invalid box."""
        if len(invalid_boxes) == 0 or len(proposals_i) == 0:
            return proposals_i
        iou_invalid = pairwise_iou(invalid_boxes, proposals_i.proposal_boxes).max(dim=0).values
        if len(targets_i):
            iou_valid = pairwise_iou(targets_i.gt_boxes, proposals_i.proposal_boxes).max(dim=0).values
        else:
            iou_valid = torch.zeros_like(iou_invalid)
        ignored = (iou_invalid > iou_valid) & (iou_invalid >= self.ignore_iou_threshold)
        return proposals_i[~ignored]

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals, targets):
        """Same contract as ``StandardROIHeads.label_and_sample_proposals``; targets may carry
        ``gt_valid``. Returned proposals carry ``gt_classes`` and the matched valid ``gt_boxes``."""
        split = [split_valid(t) for t in targets]
        valid_targets = [v for v, _ in split]
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(valid_targets, proposals)
        proposals = [self._drop_ignored(p, t, inv) for p, (t, inv) in zip(proposals, split)]

        proposals_with_gt, num_fg_samples, num_bg_samples = [], [], []
        for proposals_i, targets_i in zip(proposals, valid_targets):
            has_gt = len(targets_i) > 0
            match_quality_matrix = pairwise_iou(targets_i.gt_boxes, proposals_i.proposal_boxes)
            matched_idxs, matched_labels = self.proposal_matcher(match_quality_matrix)
            sampled_idxs, gt_classes = self._sample_proposals(matched_idxs, matched_labels, targets_i.gt_classes)
            proposals_i = proposals_i[sampled_idxs]
            proposals_i.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled_idxs]
                for name, value in targets_i.get_fields().items():
                    if name.startswith("gt_") and not proposals_i.has(name):
                        proposals_i.set(name, value[sampled_targets])
            num_bg_samples.append((gt_classes == self.num_classes).sum().item())
            num_fg_samples.append(gt_classes.numel() - num_bg_samples[-1])
            proposals_with_gt.append(proposals_i)

        storage = get_event_storage()
        storage.put_scalar("roi_head/num_fg_samples", np.mean(num_fg_samples))
        storage.put_scalar("roi_head/num_bg_samples", np.mean(num_bg_samples))
        return proposals_with_gt
