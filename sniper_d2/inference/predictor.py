"""Multi-scale tiled inference on full images, stitched back to original pixels.

For each test scale: the scaled image is covered by windows of ``TILE_SIZE`` scaled pixels
overlapping by ``TILE_OVERLAP`` (:func:`~sniper_d2.geometry.tile_windows`); each window is cut
from the ORIGINAL image and resized on its own (:func:`~sniper_d2.geometry.crop_and_scale`), so no
scaled copy of the whole image is ever held: memory per tile is bounded by ``TILE_SIZE`` whatever the
scale. Tiles go through the model ``TILE_BATCH_SIZE`` at a time. Boxes are mapped back to original
pixels (``x = u / scale + x0``) and clipped; a box touching an inner window border is dropped (an
overlapping window sees the object whole); a box whose ``sqrt(w * h)`` (original pixels) is outside
the scale's test range ``(lo, hi]`` is dropped. Then all scales are merged per class, and across
classes where ``CROSS_CLASS_IOU`` is set (:func:`~sniper_d2.inference.merge.merge_detections`), on the
device the model returned its boxes on.

Nodata: when the image has a valid-data mask (a nodata value, an alpha band or an internal mask,
:attr:`~sniper_d2.image_io.ImageReader.has_mask`), a window lying wholly in nodata is not run
(:meth:`MultiScaleTiledPredictor.cut_tile` returns None; the pixels report leaves it out), and a
detection whose centre lies on a nodata pixel of its tile is dropped.
"""

from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes

from ..chips import resolve_scale
from ..config_types import ConfigError, parse_scales
from ..geometry import crop_and_scale, scaled_size, tile_windows, touches_inner_border
from ..image_io import DEFAULT_MAX_IMAGE_PIXELS, read_chip, read_chip_valid_mask
from .merge import METHODS, merge_detections
from .precision import (backbone_autocast, check_backbone_precision, check_precision_name, model_device_type,
                        resolve_precision)

__all__ = ["TiledInferenceParams", "Tile", "tile_batches", "image_size_of", "window_pixels", "centred_on_valid",
           "cat_detections",
           "MultiScaleTiledPredictor"]


@dataclass(frozen=True)
class TiledInferenceParams:
    """``cfg.SNIPER.TEST`` as plain values (see sniper_d2/config.py for each key)."""

    scales: tuple  # resize factors, or FIT_SCALE (-1): long side fit to ``fit_size``
    valid_ranges: tuple  # per scale a ValidRange (pairs (lo, hi), hi -1 = inf, are parsed): keep lo < sqrt(w*h) <= hi
    tile_size: int = 1024  # scaled pixels
    fit_size: int = 512  # FIT_SCALE fits the long side to this (cfg.SNIPER.CHIP_SIZE, as in training)
    tile_overlap: int = 256  # scaled pixels
    tile_batch_size: int = 4
    merge_method: str = "nms"
    merge_iou: float = 0.5
    merge_ios: float = 0.8
    soft_nms_sigma: float = 0.55
    cross_class_iou: float = -1.0  # > 0: cross-class merge at this IoU after the per-class merge; -1 off
    score_thresh: float = 0.05
    max_detections: int = 500
    use_border_rule: bool = True  # False only to show what the rule prevents (tests)
    mode: str = "full"  # "full" or "autofocus" (sniper_d2/inference/autofocus.py)
    focus_thresholds: tuple = ()  # AutoFocus, one per scale (cfg.SNIPER.AUTOFOCUS.*)
    focus_dilations: tuple = ()
    focus_min_chip_sizes: tuple = ()
    focus_keep_small_outside_chips: bool = True  # a scale keeps its small detections where no finer scale ran
    precision: str = "fp32"  # of the backbone: "auto", "fp32", "bf16", "fp16" (sniper_d2/inference/precision.py)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # cfg.SNIPER.INPUT.MAX_IMAGE_PIXELS (sniper_d2/image_io.py)

    def __post_init__(self):
        scales, valid_ranges = parse_scales(self.scales, self.valid_ranges, "SNIPER.TEST")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "valid_ranges", valid_ranges)
        if not 0 <= self.tile_overlap < self.tile_size:
            raise ConfigError(f"SNIPER.TEST.TILE_OVERLAP ({self.tile_overlap}) must be >= 0 and smaller than "
                             f"SNIPER.TEST.TILE_SIZE ({self.tile_size})")
        if self.tile_batch_size < 1:
            raise ConfigError(f"SNIPER.TEST.TILE_BATCH_SIZE must be >= 1, got {self.tile_batch_size}")
        if self.mode not in ("full", "autofocus"):
            raise ConfigError(f"SNIPER.TEST.MODE must be 'full' or 'autofocus', got {self.mode!r}")
        if self.mode == "autofocus":
            for key, v in (("THRESHOLDS", self.focus_thresholds), ("DILATIONS", self.focus_dilations),
                           ("MIN_CHIP_SIZES", self.focus_min_chip_sizes)):
                if len(v) != len(self.scales):
                    raise ConfigError(f"SNIPER.AUTOFOCUS.{key} has {len(v)} entries but SNIPER.TEST.SCALES has "
                                      f"{len(self.scales)}")
        check_precision_name(self.precision)
        if self.merge_method not in METHODS:
            raise ConfigError(f"SNIPER.TEST.MERGE_METHOD must be one of {METHODS}, got {self.merge_method!r}")
        if not (self.cross_class_iou == -1 or 0 < self.cross_class_iou <= 1):
            raise ConfigError(f"SNIPER.TEST.CROSS_CLASS_IOU must be in (0, 1] or -1 (off), got {self.cross_class_iou}")

    @classmethod
    def from_cfg(cls, cfg):
        t = cfg.SNIPER.TEST
        return cls(scales=t.SCALES, valid_ranges=t.VALID_RANGES,
                   tile_size=int(t.TILE_SIZE), fit_size=int(cfg.SNIPER.CHIP_SIZE), tile_overlap=int(t.TILE_OVERLAP),
                   tile_batch_size=int(t.TILE_BATCH_SIZE), merge_method=t.MERGE_METHOD, merge_iou=float(t.MERGE_IOU),
                   merge_ios=float(t.MERGE_IOS),
                   soft_nms_sigma=float(t.SOFT_NMS_SIGMA), cross_class_iou=float(t.CROSS_CLASS_IOU),
                   score_thresh=float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
                   max_detections=int(cfg.TEST.DETECTIONS_PER_IMAGE), mode=str(t.MODE),
                   focus_thresholds=tuple(float(v) for v in cfg.SNIPER.AUTOFOCUS.THRESHOLDS),
                   focus_dilations=tuple(int(v) for v in cfg.SNIPER.AUTOFOCUS.DILATIONS),
                   focus_min_chip_sizes=tuple(int(v) for v in cfg.SNIPER.AUTOFOCUS.MIN_CHIP_SIZES),
                   focus_keep_small_outside_chips=bool(cfg.SNIPER.AUTOFOCUS.KEEP_SMALL_OUTSIDE_CHIPS),
                   precision=str(t.PRECISION), max_image_pixels=int(cfg.SNIPER.INPUT.MAX_IMAGE_PIXELS))


class Tile(NamedTuple):
    """One window of one scale, ready for the model."""

    pixels: np.ndarray  # (h, w, 3) uint8, h, w <= tile_size; tile pixel u <-> original x = u / scale + x0
    origin: Tuple[float, float]  # (x0, y0) original pixels
    scale: float  # resize factor original -> tile
    inner_sides: Tuple[bool, bool, bool, bool]  # (left, top, right, bottom) is not an image border
    scale_index: int
    image_size: Tuple[int, int] = (0, 0)  # (H, W) of the whole original image (boxes are clipped to it)
    valid: Optional[np.ndarray] = None  # (h, w) bool, True where the tile pixel has data; None: all valid
    window: Tuple[int, int, int, int] = (0, 0, 0, 0)  # XYXY scaled pixels of this scale


def window_pixels(window):
    """Pixels of an XYXY window (scaled pixels): what the pixels report counts per tile."""
    return int((window[2] - window[0]) * (window[3] - window[1]))


def tile_batches(tiles, batch_size):
    """Group an iterable of tiles into lists of at most ``batch_size``, lazily (the last may be shorter):
    only one batch of tiles is held at a time."""
    batch = []
    for tile in tiles:
        batch.append(tile)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def image_size_of(source):
    """(H, W) of an image given as an (H, W, C) array or as an open image reader."""
    return tuple(int(v) for v in (source.shape[:2] if isinstance(source, np.ndarray) else source.image_size))


def centred_on_valid(boxes_tile, valid):
    """(N,) bool tensor: the centre of each box lies on a True pixel of ``valid``.

    Args:
        boxes_tile: (N, 4) float tensor XYXY in tile pixels. valid: (h, w) bool array over the
            tile's pixels (centres outside it are clamped to its border pixels).
    """
    mask = torch.as_tensor(valid, device=boxes_tile.device)
    h, w = mask.shape
    cx = ((boxes_tile[:, 0] + boxes_tile[:, 2]) / 2).floor().long().clamp(0, w - 1)
    cy = ((boxes_tile[:, 1] + boxes_tile[:, 3]) / 2).floor().long().clamp(0, h - 1)
    return mask[cy, cx]


def cat_detections(parts):
    """Concatenate per-tile (boxes, scores, classes) triples into one (empty tensors for none)."""
    if not parts:
        return torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return tuple(torch.cat([part[i] for part in parts]) for i in range(3))


class MultiScaleTiledPredictor:
    """Runs a detector over tiles of several scales and stitches the detections.

    Args:
        model (callable): detectron2-style, in eval mode: ``model(list of {"image": (3, h, w) uint8
            tensor, "height": h, "width": w}) -> list of {"instances": Instances(pred_boxes, scores,
            pred_classes)}`` with boxes in the input's pixels (e.g. GeneralizedRCNN: giving
            ``height``/``width`` equal to the tile size keeps its outputs in tile pixels). A
            stand-in returning known boxes works too (see tests).
        params (TiledInferenceParams).

    The steps are public so that other test modes (and the prefetching pipeline) compose them:
    :meth:`scale_windows` (which windows of which scale), :meth:`cut_tile` (one window's pixels),
    :meth:`detect_tiles` (model + stitching to original pixels + the scale's range), :meth:`merge`.
    :meth:`detect_windows` is "run the detector on these windows of this image at this scale".
    """

    def __init__(self, model, params):
        self.model = model
        self.params = params
        # The forward pass's precision on the model's device ("auto" resolved once, here).
        self.device_type = model_device_type(model)
        self.precision = resolve_precision(params.precision, self.device_type) if model is not None else "fp32"
        check_backbone_precision(model, self.precision)

    def scale_windows(self, image_size):
        """[(scale_index, scale, windows (T, 4) int64 XYXY scaled px)] for every scale that leaves a pixel."""
        p = self.params
        h, w = image_size
        out = []
        for s_idx, entry in enumerate(p.scales):
            scale = resolve_scale(entry, (h, w), p.fit_size)
            scaled_h, scaled_w = scaled_size((h, w), scale)
            if scaled_h < 1 or scaled_w < 1:
                continue  # the image vanishes at this scale
            out.append((s_idx, scale, tile_windows((scaled_h, scaled_w), p.tile_size, p.tile_overlap)))
        return out

    def cut_tile(self, source, window, scale, scale_index):
        """The :class:`Tile` of one window (XYXY scaled px) at ``scale``; None when the window lies
        wholly in the image's nodata (its mask is read first: its pixels are then never decoded).

        ``source``: the original image as an (H, W, 3) uint8 array, or an open image reader
        (:func:`sniper_d2.image_io.open_image`), which reads only the pixels the tile needs (and
        the tile's valid-data mask when the image has one).
        """
        chip = np.asarray(window, np.float64) / scale
        size = image_size_of(source)
        valid = None
        if isinstance(source, np.ndarray):
            pixels, origin = crop_and_scale(source, chip, scale, self.params.tile_size)
        else:
            valid = read_chip_valid_mask(source, chip, scale, self.params.tile_size)
            if valid is not None and not valid.any():
                return None
            pixels, origin = read_chip(source, chip, scale, self.params.tile_size)
        return Tile(pixels, origin, scale, self._inner_sides(window, scale, size), scale_index, size, valid,
                    tuple(int(v) for v in window))

    def cut_tiles(self, source, windows, scale, scale_index, pixels=None):
        """Yield the :class:`Tile` s of ``windows`` (one scale) that hold data (see :meth:`cut_tile`).

        ``pixels``: an (S,) int64 array; each tile run adds its window's pixels at ``scale_index``.
        """
        for window in windows:
            tile = self.cut_tile(source, window, scale, scale_index)
            if tile is not None:
                if pixels is not None:
                    pixels[scale_index] += window_pixels(window)
                yield tile

    @staticmethod
    def _inner_sides(window, scale, image_size):
        h, w = image_size
        scaled_h, scaled_w = scaled_size((h, w), scale)
        return (bool(window[0] > 0), bool(window[1] > 0), bool(window[2] < scaled_w), bool(window[3] < scaled_h))

    def tiles(self, image, pixels=None):
        """Yield the :class:`Tile` s of all scales of one image (``image``: (H, W, 3) uint8, or an
        open image reader); windows wholly in nodata are left out (``pixels``: see :meth:`cut_tiles`)."""
        for s_idx, scale, windows in self.scale_windows(image_size_of(image)):
            yield from self.cut_tiles(image, windows, scale, s_idx, pixels)

    def detect_tiles(self, tiles, raw_outputs=None, valid_range=None):
        """Run the model on tiles (one forward pass); per tile, its detections in original pixels.

        Each tile's boxes: score >= ``score_thresh``, not touching an inner tile side (border rule),
        centred on a valid pixel of the tile (``Tile.valid``, when the image has a mask), mapped
        ``x = u / scale + x0``, clipped to the image, kept when ``lo < sqrt(w*h) <= hi`` of the
        tile's scale (original px), or of ``valid_range`` (a ValidRange) when given. Tiles may come
        from different images.

        Returns:
            list over tiles of (boxes (K, 4) float32, scores (K,), classes (K,) int64), model device.
            With ``raw_outputs`` a list, the model's output dict of each tile is appended to it, with
            ``"window"``: the tile's window (XYXY scaled px).
        """
        inputs = [{"image": torch.as_tensor(np.ascontiguousarray(t.pixels.transpose(2, 0, 1))),
                   "height": t.pixels.shape[0], "width": t.pixels.shape[1]} for t in tiles]
        with torch.no_grad(), backbone_autocast(self.model, self.precision, self.device_type):
            outputs = self.model(inputs)
        if len(outputs) != len(tiles):
            raise RuntimeError(f"the model returned {len(outputs)} outputs for {len(tiles)} tiles")
        if raw_outputs is not None:  # with each tile's window: windows in nodata were not run
            raw_outputs.extend({**out, "window": tile.window} for tile, out in zip(tiles, outputs))
        p = self.params
        results = []
        for tile, out in zip(tiles, outputs):
            inst = out["instances"]
            boxes, scores, classes = inst.pred_boxes.tensor.float(), inst.scores.float(), inst.pred_classes
            keep = scores >= p.score_thresh
            if p.use_border_rule:
                th, tw = tile.pixels.shape[:2]
                keep &= ~touches_inner_border(boxes, (tw, th), tile.inner_sides)
            if tile.valid is not None:
                keep &= centred_on_valid(boxes, tile.valid)
            boxes = boxes[keep] / tile.scale + boxes.new_tensor(tile.origin * 2, dtype=torch.float32)
            valid = valid_range if valid_range is not None else self.params.valid_ranges[tile.scale_index]
            results.append(self._filter(boxes, scores[keep], classes[keep].long(), valid, tile.image_size))
        return results

    @staticmethod
    def _filter(boxes, scores, classes, valid_range, image_size):
        """Clip to the image, keep lo < sqrt(w*h) <= hi of ``valid_range`` (original pixels)."""
        boxes = Boxes(boxes)
        boxes.clip(image_size)
        size = boxes.area().clamp(min=0).sqrt()
        boxes = boxes.tensor
        keep = valid_range.test_mask(size)
        return boxes[keep], scores[keep], classes[keep]

    def _batched(self, tiles, raw_outputs=None, valid_range=None):
        """detect_tiles over an iterable of tiles, TILE_BATCH_SIZE at a time; list of per-tile results."""
        return [part for batch in tile_batches(tiles, self.params.tile_batch_size)
                for part in self.detect_tiles(batch, raw_outputs, valid_range)]

    def detect_windows(self, image, scale_index, windows, scale=None, raw_outputs=None, valid_range=None,
                       pixels=None):
        """Run the detector on some windows of one image at one scale, before merging.

        Args:
            image: (H, W, 3) uint8, original size, model input format; or an open image reader
                (:func:`sniper_d2.image_io.open_image`).
            scale_index (int): index into SNIPER.TEST.SCALES / VALID_RANGES: the range that filters.
            windows: (T, 4) XYXY scaled-image pixels (e.g. from ``scale_windows`` or focus chips).
            scale (float or None): the resize factor; None = the scale_index's (FIT resolved).
            raw_outputs (list or None): when a list, the model's output dict of each window run is
                appended to it, in window order, with its ``"window"`` (AutoFocus reads the focus
                maps there; windows wholly in nodata are not run).
            valid_range (ValidRange or None): filter by this range instead of the scale's.
            pixels: see :meth:`cut_tiles` (windows wholly in nodata are not run).

        Returns:
            (boxes (K, 4) float32 XYXY original px, scores (K,), classes (K,) int64), unmerged,
            on the model's device.
        """
        h, w = image_size_of(image)
        if scale is None:
            scale = resolve_scale(self.params.scales[scale_index], (h, w), self.params.fit_size)
        parts = self._batched(self.cut_tiles(image, windows, scale, scale_index, pixels), raw_outputs, valid_range)
        return cat_detections(parts)

    def merge(self, parts):
        """Merge per-tile/per-scale detections of one image (list of (boxes, scores, classes)).

        Returns:
            dict ``boxes`` (K, 4) float32 XYXY original px, ``scores`` (K,) float32, ``classes`` (K,)
            int64: CPU tensors, K <= max_detections, by decreasing score.
        """
        p = self.params
        boxes, scores, classes = cat_detections(parts)
        boxes, scores, classes = merge_detections(boxes, scores.float(), classes.long(), method=p.merge_method,
                                                  iou_threshold=p.merge_iou, top_k=p.max_detections,
                                                  sigma=p.soft_nms_sigma, ios_threshold=p.merge_ios,
                                                  cross_class_iou=p.cross_class_iou)
        return {"boxes": boxes.cpu(), "scores": scores.cpu(), "classes": classes.cpu()}

    def detect_unmerged(self, image, pixels=None):
        """All scales' tiles of one image (array or open reader) through the model; list of per-tile
        (boxes, scores, classes), see :meth:`detect_tiles` (``pixels``: see :meth:`cut_tiles`)."""
        if not hasattr(image, "read_region") and not (
                isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8):
            raise ValueError(f"expected an (H, W, C) uint8 image, got {type(image).__name__} "
                             f"{getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}")
        return self._batched(self.tiles(image, pixels))

    def __call__(self, image):
        """Detect on one full image.

        Args:
            image: (H, W, 3) uint8 numpy array in the model's input format (BGR for detectron2
                defaults), original size; or an open image reader (:func:`sniper_d2.image_io.open_image`).

        Returns:
            dict with ``boxes`` (K, 4) float32 XYXY original pixels, ``scores`` (K,) float32,
            ``classes`` (K,) int64 (contiguous ids): CPU tensors, K <= max_detections, by decreasing
            score; ``pixels``: (S,) int64, pixels through the detector per SNIPER.TEST.SCALES entry
            (windows wholly in nodata left out).
            Mode "autofocus" adds ``autofocus`` (:func:`~sniper_d2.inference.autofocus.autofocus_predict`).
        """
        from .autofocus import autofocus_predict

        if self.params.mode == "autofocus":
            return autofocus_predict(self, image)
        pixels = np.zeros(len(self.params.scales), np.int64)
        return {**self.merge(self.detect_unmerged(image, pixels)), "pixels": pixels}
