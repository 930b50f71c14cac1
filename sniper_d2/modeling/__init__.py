"""Ignore-aware heads for SNIPER. Importing this module registers them with detectron2:

- ``MODEL.PROPOSAL_GENERATOR.NAME: "SniperRPN"``
- ``MODEL.ROI_HEADS.NAME: "SniperROIHeads"``

Both read the per-box flag ``Instances.gt_valid`` (bool) written by
:class:`sniper_d2.data.mapper.SniperDatasetMapper`; without it they behave exactly like
detectron2's ``RPN`` and ``StandardROIHeads``.
"""

from .ignore import split_valid
from .roi_heads import SniperROIHeads
from .rpn import SniperRPN

__all__ = ["SniperRPN", "SniperROIHeads", "split_valid"]
