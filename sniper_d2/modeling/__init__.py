"""Ignore-aware heads for SNIPER. Importing this module registers them with detectron2:

- ``MODEL.PROPOSAL_GENERATOR.NAME: "SniperRPN"``
- ``MODEL.ROI_HEADS.NAME: "SniperROIHeads"``
- ``MODEL.META_ARCHITECTURE: "SniperFocusRCNN"`` (AutoFocus's focus head, :mod:`.focus`)

Both read the per-box flag ``Instances.gt_valid`` (bool) written by
:class:`sniper_d2.data.mapper.SniperDatasetMapper`; without it they behave exactly like
detectron2's ``RPN`` and ``StandardROIHeads``.
"""

from .focus import FocusHead, SniperFocusRCNN, focus_labels
from .ignore import split_valid
from .roi_heads import SniperROIHeads
from .rpn import SniperRPN

__all__ = ["SniperRPN", "SniperROIHeads", "SniperFocusRCNN", "FocusHead", "focus_labels", "split_valid"]
