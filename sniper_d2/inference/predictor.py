"""Multi-scale tiled inference on full images, stitched back to original pixels.

For each test scale: the scaled image is covered by windows of ``TILE_SIZE`` scaled pixels
overlapping by ``TILE_OVERLAP`` (:func:`~sniper_d2.inference.tiling.tile_windows`); each window is cut
from the ORIGINAL image and resized on its own (:func:`~sniper_d2.data.mapper.crop_and_scale`), so no
scaled copy of the whole image is ever held: memory per tile is bounded by ``TILE_SIZE`` whatever the
scale. Tiles go through the model ``TILE_BATCH_SIZE`` at a time. Boxes are mapped back to original
pixels (``x = u / scale + x0``) and clipped; a box touching an inner window border is dropped (an
overlapping window sees the object whole); a box whose ``sqrt(w * h)`` (original pixels) is outside
the scale's test range ``(lo, hi]`` is dropped. Then all scales are merged per class
(:func:`~sniper_d2.inference.merge.merge_detections`) on the device the model returned its boxes on.
"""

from dataclasses import dataclass
from typing import NamedTuple, Tuple

import numpy as np
import torch

from ..chips import resolve_scale
from ..data.mapper import crop_and_scale
from .merge import METHODS, merge_detections
from .tiling import tile_windows, touches_inner_border

__all__ = ["TiledInferenceParams", "Tile", "MultiScaleTiledPredictor"]


@dataclass(frozen=True)
class TiledInferenceParams:
    """``cfg.SNIPER.TEST`` as plain values (see sniper_d2/config.py for each key)."""

    scales: tuple  # resize factors, or FIT_SCALE (-1): long side fit to ``fit_size``
    valid_ranges: tuple  # per scale (lo, hi], sqrt(w*h) in original pixels; hi -1 = infinity
    tile_size: int = 1024  # scaled pixels
    fit_size: int = 512  # FIT_SCALE fits the long side to this (cfg.SNIPER.CHIP_SIZE, as in training)
    tile_overlap: int = 256  # scaled pixels
    tile_batch_size: int = 4
    merge_method: str = "nms"
    merge_iou: float = 0.5
    merge_ios: float = 0.8
    soft_nms_sigma: float = 0.55
    score_thresh: float = 0.05
    max_detections: int = 500
    use_border_rule: bool = True  # False only to show what the rule prevents (tests)

    def __post_init__(self):
        if len(self.scales) != len(self.valid_ranges):
            raise ValueError(f"SNIPER.TEST.SCALES has {len(self.scales)} entries but SNIPER.TEST.VALID_RANGES "
                             f"has {len(self.valid_ranges)}")
        if not 0 <= self.tile_overlap < self.tile_size:
            raise ValueError(f"SNIPER.TEST.TILE_OVERLAP ({self.tile_overlap}) must be >= 0 and smaller than "
                             f"SNIPER.TEST.TILE_SIZE ({self.tile_size})")
        if self.tile_batch_size < 1:
            raise ValueError(f"SNIPER.TEST.TILE_BATCH_SIZE must be >= 1, got {self.tile_batch_size}")
        if self.merge_method not in METHODS:
            raise ValueError(f"SNIPER.TEST.MERGE_METHOD must be one of {METHODS}, got {self.merge_method!r}")

    @classmethod
    def from_cfg(cls, cfg):
        t = cfg.SNIPER.TEST
        return cls(scales=tuple(float(s) for s in t.SCALES),
                   valid_ranges=tuple((float(lo), float(hi)) for lo, hi in t.VALID_RANGES),
                   tile_size=int(t.TILE_SIZE), fit_size=int(cfg.SNIPER.CHIP_SIZE), tile_overlap=int(t.TILE_OVERLAP),
                   tile_batch_size=int(t.TILE_BATCH_SIZE), merge_method=t.MERGE_METHOD, merge_iou=float(t.MERGE_IOU),
                   merge_ios=float(t.MERGE_IOS),
                   soft_nms_sigma=float(t.SOFT_NMS_SIGMA), score_thresh=float(t.SCORE_THRESH),
                   max_detections=int(t.MAX_DETECTIONS))


class Tile(NamedTuple):
    """One window of one scale, ready for the model."""

    pixels: np.ndarray  # (h, w, 3) uint8, h, w <= tile_size; tile pixel u <-> original x = u / scale + x0
    origin: Tuple[float, float]  # (x0, y0) original pixels
    scale: float  # resize factor original -> tile
    inner_sides: Tuple[bool, bool, bool, bool]  # (left, top, right, bottom) is not an image border
    scale_index: int


class MultiScaleTiledPredictor:
    """Runs a detector over tiles of several scales and stitches the detections.

    Args:
        model (callable): detectron2-style, in eval mode: ``model(list of {"image": (3, h, w) uint8
            tensor, "height": h, "width": w}) -> list of {"instances": Instances(pred_boxes, scores,
            pred_classes)}`` with boxes in the input's pixels (e.g. GeneralizedRCNN: giving
            ``height``/``width`` equal to the tile size keeps its outputs in tile pixels). A
            stand-in returning known boxes works too (see tests).
        params (TiledInferenceParams).
    """

    def __init__(self, model, params):
        self.model = model
        self.params = params

    def tiles(self, image):
        """Yield the :class:`Tile` s of all scales of one image (``image``: (H, W, 3) uint8)."""
        p = self.params
        h, w = image.shape[:2]
        for s_idx, entry in enumerate(p.scales):
            scale = resolve_scale(entry, (h, w), p.fit_size)
            scaled_h, scaled_w = int(round(h * scale)), int(round(w * scale))
            if scaled_h < 1 or scaled_w < 1:
                continue  # the image vanishes at this scale
            for window in tile_windows((scaled_h, scaled_w), p.tile_size, p.tile_overlap):
                pixels, origin, _ = crop_and_scale(image, window / scale, scale, p.tile_size)
                inner = (bool(window[0] > 0), bool(window[1] > 0), bool(window[2] < scaled_w),
                         bool(window[3] < scaled_h))
                yield Tile(pixels, origin, scale, inner, s_idx)

    def _detect(self, batch):
        """Run the model on a list of tiles; (boxes, scores, classes) per tile, original px, model device."""
        inputs = [{"image": torch.as_tensor(np.ascontiguousarray(t.pixels.transpose(2, 0, 1))),
                   "height": t.pixels.shape[0], "width": t.pixels.shape[1]} for t in batch]
        with torch.no_grad():
            outputs = self.model(inputs)
        if len(outputs) != len(batch):
            raise RuntimeError(f"the model returned {len(outputs)} outputs for {len(batch)} tiles")
        p = self.params
        results = []
        for tile, out in zip(batch, outputs):
            inst = out["instances"]
            boxes, scores, classes = inst.pred_boxes.tensor, inst.scores, inst.pred_classes
            keep = scores >= p.score_thresh
            if p.use_border_rule:
                th, tw = tile.pixels.shape[:2]
                keep &= ~touches_inner_border(boxes, (tw, th), tile.inner_sides)
            boxes = boxes[keep].float() / tile.scale + boxes.new_tensor(tile.origin * 2, dtype=torch.float32)
            results.append((boxes, scores[keep], classes[keep], tile.scale_index))
        return results

    def _filter(self, boxes, scores, classes, scale_index, image_size):
        """Clip to the image, keep lo < sqrt(w*h) <= hi of the scale (original pixels)."""
        h, w = image_size
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
        size = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
        lo, hi = self.params.valid_ranges[scale_index]
        keep = (size > max(lo, 0.0)) & ((size <= hi) if hi >= 0 else True)
        return boxes[keep], scores[keep], classes[keep]

    def __call__(self, image):
        """Detect on one full image.

        Args:
            image: (H, W, 3) uint8 numpy array in the model's input format (BGR for detectron2
                defaults), original size.

        Returns:
            dict with ``boxes`` (K, 4) float32 XYXY original pixels, ``scores`` (K,) float32,
            ``classes`` (K,) int64 (contiguous ids): CPU tensors, K <= max_detections, by decreasing
            score.
        """
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8):
            raise ValueError(f"expected an (H, W, C) uint8 image, got {type(image).__name__} "
                             f"{getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}")
        p = self.params
        parts, batch = [], []
        for tile in self.tiles(image):
            batch.append(tile)
            if len(batch) == p.tile_batch_size:
                parts += self._detect(batch)
                batch = []
        if batch:
            parts += self._detect(batch)
        parts = [self._filter(b, s, c, s_idx, image.shape[:2]) for b, s, c, s_idx in parts]
        if not parts:  # no scale left a pixel
            return {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "classes": torch.zeros(0, dtype=torch.long)}
        boxes, scores, classes = (torch.cat([part[i] for part in parts]) for i in range(3))
        boxes, scores, classes = merge_detections(boxes, scores.float(), classes.long(), method=p.merge_method,
                                                  iou_threshold=p.merge_iou, top_k=p.max_detections,
                                                  sigma=p.soft_nms_sigma, ios_threshold=p.merge_ios)
        return {"boxes": boxes.cpu(), "scores": scores.cpu(), "classes": classes.cpu()}
