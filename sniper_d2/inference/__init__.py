"""Multi-scale tiled inference: tiling, merging (NMS / soft-NMS) and the stitching predictor."""

from .merge import merge_detections, soft_nms
from .predictor import MultiScaleTiledPredictor, Tile, TiledInferenceParams
from .tiling import tile_windows, touches_inner_border

__all__ = ["merge_detections", "soft_nms", "MultiScaleTiledPredictor", "Tile", "TiledInferenceParams",
           "tile_windows", "touches_inner_border"]
