"""Multi-scale tiled inference: merging (NMS / soft-NMS), the stitching predictor, and, in their own
submodules (they import more of detectron2), evaluation (:mod:`sniper_d2.inference.evaluation`) and
the proposal dump for negative chips (:mod:`sniper_d2.inference.proposal_dump`).

Tiling geometry lives in :mod:`sniper_d2.geometry`. Nothing here imports :mod:`sniper_d2.data`
(the training side); both use :mod:`sniper_d2.geometry` and :mod:`sniper_d2.image_io`.
"""

from .merge import merge_detections, soft_nms
from .predictor import MultiScaleTiledPredictor, Tile, TiledInferenceParams, tile_batches

__all__ = ["merge_detections", "soft_nms", "MultiScaleTiledPredictor", "Tile", "TiledInferenceParams",
           "tile_batches"]
