"""SniperDatasetMapper: one planned chip -> one training input at the chip's exact scale.

Coordinate frames: a chip is ``[x0, y0, x1, y1]`` in original-image pixels; the output image is
the chip region resized by the chip's scale, so that a point ``x`` of the original image lands at
``(x - x0i) * sx`` in the output, where ``x0i = floor(x0)`` and ``sx = out_w / crop_w`` is the scale
after rounding the output to whole pixels (within half a pixel of the planned scale). The result
is zero-padded at the bottom/right to ``CHIP_SIZE x CHIP_SIZE``. Nothing re-resizes the chip
afterwards: the planned scale survives.
"""

import copy
import logging
import math

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, BoxMode, Instances

from .image_io import ImageReadError, read_image_region

__all__ = ["SniperDatasetMapper", "crop_and_scale", "chip_pixel_region", "scale_region", "chip_targets"]

logger = logging.getLogger(__name__)


def chip_pixel_region(chip, image_size):
    """Whole-pixel region (x0i, y0i, x1i, y1i) of the original image that holds ``chip``."""
    h, w = image_size
    x0i, y0i = max(0, int(math.floor(chip[0]))), max(0, int(math.floor(chip[1])))
    x1i, y1i = min(w, int(math.ceil(chip[2]))), min(h, int(math.ceil(chip[3])))
    if x1i <= x0i or y1i <= y0i:
        raise ValueError(f"chip {list(chip)} lies outside the {w}x{h} image")
    return x0i, y0i, x1i, y1i


def scale_region(crop, origin, scale, chip_size):
    """Resize a cut-out region by ``scale``; see :func:`crop_and_scale` for the outputs."""
    ch, cw = crop.shape[:2]
    out_w = max(1, int(round(cw * scale)))
    out_h = max(1, int(round(ch * scale)))
    if (out_w, out_h) == (cw, ch):
        region = crop
    else:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        region = cv2.resize(crop, (out_w, out_h), interpolation=interp)
    return region[:chip_size, :chip_size], origin, (out_w / cw, out_h / ch)


def crop_and_scale(image, chip, scale, chip_size):
    """Cut ``chip`` out of ``image`` and resize it by ``scale``.

    Args:
        image: (H, W, C) uint8, the original image.
        chip: (4,) XYXY in original pixels.
        scale (float): resize factor.
        chip_size (int): output side; the resized region is cut to at most this.

    Returns:
        (region (h, w, C) uint8 with h, w <= chip_size, (x0i, y0i) crop origin in original pixels,
         (sx, sy) exact scale factors applied).
    """
    x0i, y0i, x1i, y1i = chip_pixel_region(chip, image.shape[:2])
    return scale_region(image[y0i:y1i, x0i:x1i], (x0i, y0i), scale, chip_size)


def chip_targets(boxes, crowd, origin, factors, out_size, valid_range, min_visible_fraction):
    """Map original-pixel boxes into a chip and flag which are valid positives.

    Args:
        boxes: (N, 4) float XYXY in original pixels; crowd: (N,) bool.
        origin: (x0i, y0i) crop origin; factors: (sx, sy); out_size: (h, w) of the chip content.
        valid_range: (lo, hi) on sqrt(w*h) in original pixels (hi may be inf).
        min_visible_fraction: a box with less of its area inside the chip is invalid (ignore).

    Returns:
        keep (N,) bool (boxes overlapping the chip), boxes_chip (K, 4) float32 in chip pixels
        (clipped), valid (K,) bool.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    (x0, y0), (sx, sy), (h, w) = origin, factors, out_size
    mapped = (boxes - [x0, y0, x0, y0]) * [sx, sy, sx, sy]
    clipped = np.stack([np.clip(mapped[:, 0], 0, w), np.clip(mapped[:, 1], 0, h),
                        np.clip(mapped[:, 2], 0, w), np.clip(mapped[:, 3], 0, h)], axis=1)
    area = np.prod(mapped[:, 2:] - mapped[:, :2], axis=1)
    visible = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1)
    keep = visible > 0
    size = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    lo, hi = valid_range
    valid = ((size >= lo) & (size < hi) & (visible >= min_visible_fraction * np.maximum(area, 1e-12))
             & ~np.asarray(crowd, bool).reshape(-1)
             & ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1))
    return keep, clipped[keep].astype(np.float32), valid[keep]


class SniperDatasetMapper:
    """Chip dict (see docs/ARCHITECTURE.md) -> detectron2 training input.

    Output: ``{"image": (3, S, S) uint8 tensor, "instances": Instances(gt_boxes (chip pixels),
    gt_classes, gt_valid), "height": S, "width": S, "file_name", "image_id", "chip", "scale"}``.
    """

    @configurable
    def __init__(self, *, chip_size, image_format="BGR", horizontal_flip=True, min_visible_fraction=0.5,
                 skip_bad_images=False):
        """
        Args:
            chip_size (int): output side S in pixels.
            image_format (str): "BGR" or "RGB", as the model expects.
            horizontal_flip (bool): flip each chip with probability 0.5.
            min_visible_fraction (float): truncated boxes below this visible fraction are invalid.
            skip_bad_images (bool): return None (the chip is replaced) instead of raising on an
                unreadable image; skipped files are counted and logged.
        """
        self.chip_size = chip_size
        self.image_format = image_format
        self.horizontal_flip = horizontal_flip
        self.min_visible_fraction = min_visible_fraction
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "chip_size": cfg.SNIPER.CHIP_SIZE,
            "image_format": cfg.INPUT.FORMAT,
            "horizontal_flip": is_train and cfg.INPUT.RANDOM_FLIP == "horizontal",
            "min_visible_fraction": cfg.SNIPER.MIN_VISIBLE_FRACTION,
            "skip_bad_images": cfg.SNIPER.SKIP_BAD_IMAGES,
        }

    def _read_chip(self, dataset_dict):
        """Decode only the chip's region of the image; check the image size against the data set."""
        file_name = dataset_dict["file_name"]
        expected = (dataset_dict["height"], dataset_dict["width"])
        region = chip_pixel_region(dataset_dict["chip"], expected)
        crop, size = read_image_region(file_name, region, format=self.image_format)
        if size != expected:
            raise ImageReadError(file_name, f"image is {size[1]}x{size[0]} (after EXIF rotation) but the "
                                 f"data set says {expected[1]}x{expected[0]}")
        return scale_region(crop, region[:2], dataset_dict["scale"], self.chip_size)

    def __call__(self, dataset_dict):
        dataset_dict = copy.copy(dataset_dict)
        try:
            region, origin, factors = self._read_chip(dataset_dict)
        except ImageReadError as e:
            if not self.skip_bad_images:
                raise
            self.num_skipped += 1
            logger.warning(f"skipping a chip of an unreadable image ({self.num_skipped} skipped so far): {e}")
            return None
        h, w = region.shape[:2]

        annos = [a for a in dataset_dict.get("annotations", [])]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                         np.float64).reshape(-1, 4)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in annos], bool)
        classes = np.array([a["category_id"] for a in annos], np.int64)
        keep, boxes_chip, valid = chip_targets(boxes, crowd, origin, factors, (h, w),
                                               dataset_dict["valid_range"], self.min_visible_fraction)
        if self.horizontal_flip and np.random.rand() < 0.5:
            region = region[:, ::-1]
            boxes_chip = np.stack([w - boxes_chip[:, 2], boxes_chip[:, 1], w - boxes_chip[:, 0], boxes_chip[:, 3]], 1)

        padded = np.zeros((self.chip_size, self.chip_size, region.shape[2]), np.uint8)
        padded[:h, :w] = region
        instances = Instances((self.chip_size, self.chip_size))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes_chip, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.as_tensor(classes[keep], dtype=torch.int64)
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
