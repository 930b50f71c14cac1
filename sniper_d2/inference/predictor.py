"""Multi-scale tiled inference on full images, stitched back to original pixels.

For each test scale: the image is covered by windows of ``TILE_SIZE`` scaled pixels (overlapping by
``TILE_OVERLAP``); each window is cut from the ORIGINAL image and resized on its own (so no full
scaled copy of a large image is ever held), windows go through the model ``TILE_BATCH_SIZE`` at a
time, and boxes are mapped back to original pixels. A box touching an inner window border is
dropped (a neighbouring window sees it whole); a box outside the scale's test range is dropped.
Then all scales are merged per class (:func:`merge_detections`).
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..chips import resolve_scale
from ..data.mapper import crop_and_scale
from .merge import merge_detections
from .tiling import tile_windows, touches_inner_border

__all__ = ["TiledInferenceParams", "MultiScaleTiledPredictor"]


@dataclass(frozen=True)
class TiledInferenceParams:
    """``cfg.SNIPER.TEST`` as plain values (see sniper_d2/config.py for each)."""

    scales: tuple
    valid_ranges: tuple
    tile_size: int = 1024
    fit_size: int = 512  # FIT_SCALE fits the long side to this (cfg.SNIPER.CHIP_SIZE, as in training)
    tile_overlap: int = 256
    tile_batch_size: int = 4
    merge_method: str = "nms"
    merge_iou: float = 0.5
    soft_nms_sigma: float = 0.55
    score_thresh: float = 0.05
    max_detections: int = 500
    use_border_rule: bool = True

    @classmethod
    def from_cfg(cls, cfg):
        t = cfg.SNIPER.TEST
        if len(t.SCALES) != len(t.VALID_RANGES):
            raise ValueError(f"SNIPER.TEST.SCALES has {len(t.SCALES)} entries but SNIPER.TEST.VALID_RANGES "
                             f"has {len(t.VALID_RANGES)}")
        return cls(scales=tuple(float(s) for s in t.SCALES),
                   valid_ranges=tuple((float(lo), float(hi)) for lo, hi in t.VALID_RANGES),
                   tile_size=t.TILE_SIZE, fit_size=cfg.SNIPER.CHIP_SIZE, tile_overlap=t.TILE_OVERLAP,
                   tile_batch_size=t.TILE_BATCH_SIZE,
                   merge_method=t.MERGE_METHOD, merge_iou=t.MERGE_IOU, soft_nms_sigma=t.SOFT_NMS_SIGMA,
                   score_thresh=t.SCORE_THRESH, max_detections=t.MAX_DETECTIONS)


class MultiScaleTiledPredictor:
    """Runs a detector over tiles of several scales and stitches the detections.

    Args:
        model (callable): detectron2-style, in eval mode: ``model(list of {"image": (3, h, w) tensor,
            "height": h, "width": w}) -> list of {"instances": Instances}`` with boxes in the
            input's pixels (e.g. GeneralizedRCNN). A stand-in returning known boxes works too.
        params (TiledInferenceParams).
    """

    def __init__(self, model, params):
        self.model = model
        self.params = params

    def _tiles(self, image):
        """Yield (tile (h, w, 3) uint8, origin (x0, y0), factors (sx, sy), window, scaled size, scale index)."""
        p = self.params
        h, w = image.shape[:2]
        for s_idx, entry in enumerate(p.scales):
            scale = resolve_scale(entry, (h, w), p.fit_size)
            scaled_size = (int(round(h * scale)), int(round(w * scale)))
            for window in tile_windows(scaled_size, p.tile_size, p.tile_overlap):
                chip = window / scale
                tile, origin, factors = crop_and_scale(image, chip, scale, p.tile_size)
                yield tile, origin, factors, window, scaled_size, s_idx

    def _run_batch(self, batch):
        inputs = [{"image": torch.as_tensor(np.ascontiguousarray(t[0].transpose(2, 0, 1))),
                   "height": t[0].shape[0], "width": t[0].shape[1]} for t in batch]
        with torch.no_grad():
            outputs = self.model(inputs)
        results = []
        for (tile, origin, factors, window, scaled_size, s_idx), out in zip(batch, outputs):
            inst = out["instances"].to("cpu")
            boxes = inst.pred_boxes.tensor.numpy().astype(np.float64)
            scores = inst.scores.numpy()
            classes = inst.pred_classes.numpy()
            keep = scores >= self.params.score_thresh
            if self.params.use_border_rule:
                # Window pixels == tile pixels up to the rounding of the crop; use the tile's size.
                tile_window = np.array([window[0], window[1], window[0] + tile.shape[1], window[1] + tile.shape[0]])
                keep &= ~touches_inner_border(boxes, tile_window, scaled_size)
            boxes = boxes[keep] / [factors[0], factors[1], factors[0], factors[1]] + [origin[0], origin[1]] * 2
            results.append((boxes, scores[keep], classes[keep], s_idx))
        return results

    def __call__(self, image):
        """Detect on one full image.

        Args:
            image: (H, W, 3) uint8 in the model's input format (BGR for detectron2 defaults).

        Returns:
            dict with ``boxes`` (K, 4) float32 XYXY original pixels, ``scores`` (K,), ``classes`` (K,)
            torch tensors (CPU), K <= max_detections, by decreasing score.
        """
        p = self.params
        h, w = image.shape[:2]
        parts, batch = [], []
        for tile in self._tiles(image):
            batch.append(tile)
            if len(batch) == p.tile_batch_size:
                parts += self._run_batch(batch)
                batch = []
        if batch:
            parts += self._run_batch(batch)
        boxes, scores, classes = [], [], []
        for b, s, c, s_idx in parts:
            b = np.stack([np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h), np.clip(b[:, 2], 0, w),
                          np.clip(b[:, 3], 0, h)], axis=1) if len(b) else b.reshape(-1, 4)
            size = np.sqrt(np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0))
            lo, hi = p.valid_ranges[s_idx]
            in_range = (size > lo) & ((size <= hi) if hi >= 0 else True) & (size > 0)
            boxes.append(b[in_range])
            scores.append(s[in_range])
            classes.append(c[in_range])
        boxes = torch.as_tensor(np.concatenate(boxes) if boxes else np.zeros((0, 4)), dtype=torch.float32)
        scores = torch.as_tensor(np.concatenate(scores) if scores else np.zeros(0), dtype=torch.float32)
        classes = torch.as_tensor(np.concatenate(classes) if classes else np.zeros(0), dtype=torch.int64)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        b, s, c = merge_detections(boxes.to(device), scores.to(device), classes.to(device), method=p.merge_method,
                                   iou_threshold=p.merge_iou, top_k=p.max_detections, sigma=p.soft_nms_sigma)
        return {"boxes": b.cpu(), "scores": s.cpu(), "classes": c.cpu()}
