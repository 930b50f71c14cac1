"""SniperDatasetMapper: one planned chip -> one training input at the chip's exact scale.

Coordinate frames: a chip is ``[x0, y0, x1, y1]`` in original-image pixels (floats allowed) and
``scale`` is its resize factor. The output image is exactly the affine map

    x_chip = (x - x0) * scale,    y_chip = (y - y0) * scale

of the original image (continuous coordinates, pixel ``j`` covering ``[j, j+1)``), for pixels and
boxes alike; its content is ``round((min(x1, W) - x0) * scale)`` pixels wide (at most CHIP_SIZE) and
is zero-padded at the bottom/right to ``CHIP_SIZE x CHIP_SIZE``. Nothing re-resizes the chip
afterwards: the planned scale survives.

Resampling: bilinear (``cv2.warpAffine`` with the exact matrix) when enlarging; when shrinking, a
sub-pixel shift to the chip origin followed by ``cv2.resize(..., fx=f, interpolation=INTER_AREA)``
(area averaging, exact factor ``f``). JPEGs read at scale <= 1/2 are decoded at 1/2, 1/4 or 1/8
size by libjpeg first (see :func:`sniper_d2.data.image_io.read_image_region`).
"""

import logging
import math

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, BoxMode, Instances

from .image_io import ImageReadError, read_image_region

__all__ = ["SniperDatasetMapper", "chip_content_size", "chip_extent", "warp_to_chip", "crop_and_scale",
           "chip_targets"]

logger = logging.getLogger(__name__)


def _round(v):
    return int(math.floor(v + 0.5))


def chip_content_size(chip, scale, image_size, chip_size):
    """(h, w) in pixels of the image content of a chip: the part of the chip inside the image,
    scaled by ``scale``, at most ``chip_size`` per side.

    Raises:
        ValueError: the chip has no pixel inside the image.
    """
    h, w = image_size
    if chip[0] < -1e-6 or chip[1] < -1e-6:
        raise ValueError(f"chip {[float(v) for v in chip]} starts outside the {w}x{h} image")
    out_w = min(chip_size, _round((min(chip[2], w) - max(chip[0], 0.0)) * scale))
    out_h = min(chip_size, _round((min(chip[3], h) - max(chip[1], 0.0)) * scale))
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"chip {[float(v) for v in chip]} at scale {scale} has no pixel inside the {w}x{h} image")
    return out_h, out_w


def _fit(region, out_size):
    """Cut or edge-pad ``region`` (h, w, C) to ``out_size`` (rounding may leave it 1 px short)."""
    out_h, out_w = out_size
    region = region[:out_h, :out_w]
    short_h, short_w = out_h - region.shape[0], out_w - region.shape[1]
    if short_h or short_w:
        region = np.pad(region, ((0, short_h), (0, short_w), (0, 0)), mode="edge")
    return region


def warp_to_chip(pixels, offset, factor, out_size):
    """Resample ``pixels`` so that source point ``c`` lands at ``(c - offset) * factor``.

    Args:
        pixels: (h, w, C) uint8 source (C <= 4).
        offset: (cx, cy) floats >= 0, the chip origin in ``pixels``' continuous coordinates.
        factor (float): resize factor from ``pixels`` to the output.
        out_size: (out_h, out_w) of the output.

    Returns:
        (out_h, out_w, C) uint8. Area averaging when shrinking, bilinear when enlarging; samples
        past the source border repeat the edge pixel.
    """
    cx, cy = float(offset[0]), float(offset[1])
    out_h, out_w = out_size
    ix, iy = max(0, int(math.floor(cx))), max(0, int(math.floor(cy)))
    fx, fy = cx - ix, cy - iy
    if factor >= 1.0:
        if factor == 1.0 and fx == 0.0 and fy == 0.0:
            return _fit(pixels[iy:, ix:], out_size)
        # Pixel-centre convention: u + 0.5 = (c + 0.5 - offset) * factor.
        m = np.array([[factor, 0.0, (0.5 - cx) * factor - 0.5],
                      [0.0, factor, (0.5 - cy) * factor - 0.5]], np.float64)
        out = cv2.warpAffine(pixels, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(out_h, out_w, -1)
    # Shrinking: only the needed source rows/columns, shifted by the sub-pixel part of the offset
    # (bilinear, at source resolution), then area-averaged by exactly `factor`.
    need_w = min(pixels.shape[1] - ix, int(math.ceil(out_w / factor)) + 1)
    need_h = min(pixels.shape[0] - iy, int(math.ceil(out_h / factor)) + 1)
    src = pixels[iy:iy + need_h, ix:ix + need_w]
    if fx or fy:
        m = np.array([[1.0, 0.0, -fx], [0.0, 1.0, -fy]], np.float64)
        src = cv2.warpAffine(src, m, (src.shape[1], src.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).reshape(src.shape)
    out = cv2.resize(src, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return _fit(out.reshape(out.shape[0], out.shape[1], -1), out_size)


def crop_and_scale(image, chip, scale, chip_size):
    """Cut ``chip`` out of an in-memory image and resize it by exactly ``scale``.

    Args:
        image: (H, W, C) uint8, the original image.
        chip: (4,) XYXY in original pixels.
        scale (float): resize factor.
        chip_size (int): the output is at most this many pixels per side.

    Returns:
        (region (h, w, C) uint8, (x0, y0) chip origin in original pixels, (scale, scale)): an
        original point ``x`` is at ``(x - x0) * scale`` in ``region``.
    """
    out_size = chip_content_size(chip, scale, image.shape[:2], chip_size)
    x0, y0 = float(chip[0]), float(chip[1])
    return warp_to_chip(image, (x0, y0), scale, out_size), (x0, y0), (float(scale), float(scale))


def chip_extent(chip, scale, image_size, chip_size):
    """(h, w) floats: the chip's part inside the image in chip pixels (at most ``chip_size``)."""
    h, w = image_size
    return (min(float(chip_size), (min(chip[3], h) - chip[1]) * scale),
            min(float(chip_size), (min(chip[2], w) - chip[0]) * scale))


def chip_targets(boxes, crowd, chip_origin, scale, extent, valid_range, min_visible_fraction):
    """Map original-pixel boxes into a chip and flag which are valid positives.

    Args:
        boxes: (N, 4) float XYXY in original pixels; crowd: (N,) bool (ignore regions).
        chip_origin: (x0, y0) original pixels; scale (float); extent: (h, w) chip pixels, the area
            boxes are clipped to (see :func:`chip_extent`).
        valid_range: (lo, hi) on sqrt(w*h) of the unclipped box in original pixels (hi may be inf;
            a negative hi means inf).
        min_visible_fraction: a box with less of its area inside the chip is invalid (ignore).

    Returns:
        keep (N,) bool (boxes overlapping the chip content), boxes_chip (K, 4) float32 XYXY in chip
        pixels (clipped to the extent), valid (K,) bool.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0 = chip_origin
    h, w = extent
    mapped = (boxes - [x0, y0, x0, y0]) * scale
    clipped = np.clip(mapped, 0.0, [w, h, w, h])
    clipped_wh = np.maximum(clipped[:, 2:] - clipped[:, :2], 0.0)
    visible = clipped_wh.prod(axis=1)
    area = np.maximum(mapped[:, 2:] - mapped[:, :2], 0.0).prod(axis=1)
    keep = visible > 0
    size = np.sqrt(np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0).prod(axis=1))
    lo, hi = valid_range
    hi = math.inf if hi < 0 else hi
    valid = ((size >= lo) & (size < hi) & (visible >= min_visible_fraction * area)
             & ~np.asarray(crowd, bool).reshape(-1) & (clipped_wh >= 1.0).all(axis=1))
    return keep, clipped[keep].astype(np.float32), valid[keep]


class SniperDatasetMapper:
    """Chip dict (see docs/ARCHITECTURE.md) -> detectron2 training input.

    Output: ``{"image": (3, S, S) uint8 tensor in ``image_format``, "instances":
    Instances(gt_boxes (K, 4) XYXY chip pixels, gt_classes (K,) int64, gt_valid (K,) bool),
    "height": S, "width": S, "file_name", "image_id", "chip", "scale"}`` with S = ``chip_size``.
    A box is kept when it overlaps the chip; it is valid (a positive) when its original size is in
    the chip's valid range, at least ``min_visible_fraction`` of it is inside, and it is no crowd box.
    """

    @configurable
    def __init__(self, *, chip_size, image_format="BGR", horizontal_flip=True, min_visible_fraction=0.5,
                 crowd_as_ignore=True, skip_bad_images=False):
        """
        Args:
            chip_size (int): output side S in pixels.
            image_format (str): "BGR" or "RGB", as the model expects.
            horizontal_flip (bool): flip each chip with probability 0.5.
            min_visible_fraction (float): truncated boxes below this visible fraction are invalid.
            crowd_as_ignore (bool): keep ``iscrowd`` boxes as invalid (ignore) regions; False drops
                them, as detectron2's DatasetMapper does (they then count as background).
            skip_bad_images (bool): return None (the data loader then takes the next chip) instead
                of raising on an unreadable image; skipped files are counted and logged.
        """
        self.chip_size = chip_size
        self.image_format = image_format
        self.horizontal_flip = horizontal_flip
        self.min_visible_fraction = min_visible_fraction
        self.crowd_as_ignore = crowd_as_ignore
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "chip_size": cfg.SNIPER.CHIP_SIZE,
            "image_format": cfg.INPUT.FORMAT,
            "horizontal_flip": is_train and cfg.INPUT.RANDOM_FLIP == "horizontal",
            "min_visible_fraction": cfg.SNIPER.MIN_VISIBLE_FRACTION,
            "crowd_as_ignore": cfg.SNIPER.CROWD_AS_IGNORE,
            "skip_bad_images": cfg.SNIPER.SKIP_BAD_IMAGES,
        }

    def _read_chip(self, dataset_dict):
        """The chip's content (h, w, 3) uint8, decoding only what it needs (one decode per call)."""
        file_name = dataset_dict["file_name"]
        chip, scale = dataset_dict["chip"], float(dataset_dict["scale"])
        expected = (int(dataset_dict["height"]), int(dataset_dict["width"]))
        out_size = chip_content_size(chip, scale, expected, self.chip_size)
        margin = 2.0 / min(scale, 1.0)  # source pixels the resampling may touch around the chip
        x0, y0 = float(chip[0]), float(chip[1])
        region = (x0 - margin, y0 - margin, x0 + out_size[1] / scale + margin, y0 + out_size[0] / scale + margin)
        src = read_image_region(file_name, region, format=self.image_format, max_reduction=1.0 / scale)
        if src.image_size != expected:
            raise ImageReadError(file_name, f"image is {src.image_size[1]}x{src.image_size[0]} (after EXIF "
                                 f"rotation) but the data set says {expected[1]}x{expected[0]}")
        r = src.reduction
        offset = ((x0 - src.origin[0]) / r, (y0 - src.origin[1]) / r)
        return warp_to_chip(src.pixels, offset, scale * r, out_size), out_size

    def _targets(self, dataset_dict):
        annos = dataset_dict.get("annotations", [])
        if not self.crowd_as_ignore:
            annos = [a for a in annos if not a.get("iscrowd", 0)]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                         np.float64).reshape(-1, 4)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in annos], bool)
        classes = np.array([a["category_id"] for a in annos], np.int64)
        chip, scale = dataset_dict["chip"], float(dataset_dict["scale"])
        extent = chip_extent(chip, scale, (dataset_dict["height"], dataset_dict["width"]), self.chip_size)
        keep, boxes_chip, valid = chip_targets(boxes, crowd, (float(chip[0]), float(chip[1])), scale, extent,
                                               dataset_dict["valid_range"], self.min_visible_fraction)
        return boxes_chip, classes[keep], valid

    def __call__(self, dataset_dict):
        """Map one chip dict; returns None for an unreadable image when ``skip_bad_images``."""
        try:
            content, (h, w) = self._read_chip(dataset_dict)
        except ImageReadError as e:
            if not self.skip_bad_images:
                raise
            self.num_skipped += 1
            logger.warning(f"skipping a chip of an unreadable image ({self.num_skipped} skipped so far): {e}")
            return None
        boxes_chip, classes, valid = self._targets(dataset_dict)
        if self.horizontal_flip and np.random.rand() < 0.5:
            content = content[:, ::-1]
            boxes_chip = np.stack([w - boxes_chip[:, 2], boxes_chip[:, 1], w - boxes_chip[:, 0], boxes_chip[:, 3]], 1)

        padded = np.zeros((self.chip_size, self.chip_size, content.shape[2]), np.uint8)
        padded[:h, :w] = content
        instances = Instances((self.chip_size, self.chip_size))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes_chip, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
        instances.gt_valid = torch.as_tensor(valid, dtype=torch.bool)
        return {
            "image": torch.as_tensor(np.ascontiguousarray(padded.transpose(2, 0, 1))),
            "instances": instances,
            "height": self.chip_size,
            "width": self.chip_size,
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict["image_id"],
            "chip": dataset_dict["chip"],
            "scale": dataset_dict["scale"],
        }
