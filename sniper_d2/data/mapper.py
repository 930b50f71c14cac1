"""SniperDatasetMapper: one planned chip -> one training input at the chip's exact scale.

Coordinate frames: a chip is ``[x0, y0, x1, y1]`` in original-image pixels (floats allowed) and
``scale`` is its resize factor. The output image is exactly the affine map

    x_chip = (x - x0) * scale,    y_chip = (y - y0) * scale

of the original image (continuous coordinates, pixel ``j`` covering ``[j, j+1)``), for pixels and
boxes alike; its content is ``scaled_length(min(x1, W) - x0, scale)`` pixels wide (rounded half up,
:func:`sniper_d2.geometry.scaled_length`; at most CHIP_SIZE) and is zero-padded at the bottom/right
to ``CHIP_SIZE x CHIP_SIZE``. Nothing re-resizes the chip afterwards: the planned scale survives.

Resampling: :func:`sniper_d2.geometry.warp_to_chip` (bilinear when enlarging, area averaging by the
exact factor when shrinking). Only the chip's source pixels are read
(:func:`sniper_d2.image_io.read_chip`): TIFFs by windows, from an overview at scale <= 1/2 when the
file has one; JPEGs read at scale <= 1/2 are decoded at 1/2, 1/4 or 1/8 size by libjpeg first.
"""

import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, BoxMode, Instances

from ..config_types import ValidRange
from ..geometry import chip_content_extent
from ..image_io import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, check_image_size, open_image, read_chip

__all__ = ["SniperDatasetMapper", "chip_targets"]

logger = logging.getLogger(__name__)


def chip_targets(boxes, crowd, chip_origin, scale, extent, valid_range, min_visible_fraction):
    """Map original-pixel boxes into a chip and flag which are valid positives.

    Args:
        boxes: (N, 4) float XYXY in original pixels; crowd: (N,) bool (ignore regions).
        chip_origin: (x0, y0) original pixels; scale (float); extent: (h, w) chip pixels, the area
            boxes are clipped to (see :func:`sniper_d2.geometry.chip_content_extent`).
        valid_range (ValidRange or (lo, hi)): on sqrt(w*h) of the unclipped box in original pixels;
            valid when lo <= size < hi (a pair's hi may be inf or -1: no upper bound).
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
    valid = (ValidRange.parse(valid_range).train_mask(size) & (visible >= min_visible_fraction * area)
             & ~np.asarray(crowd, bool).reshape(-1) & (clipped_wh >= 1.0).all(axis=1))
    return keep, clipped[keep].astype(np.float32), valid[keep]


class SniperDatasetMapper:
    """Chip dict (see docs/ARCHITECTURE.md) -> detectron2 training input.

    Output: ``{"image": (3, S, S) uint8 tensor in ``image_format``, "instances":
    Instances(gt_boxes (K, 4) XYXY chip pixels, gt_classes (K,) int64, gt_valid (K,) bool,
    gt_sizes (K,) float32 sqrt(w*h) of the unclipped box in chip pixels, gt_crowd (K,) bool),
    "height": S, "width": S, "file_name", "image_id", "chip", "scale"}`` with S = ``chip_size``.
    A box is kept when it overlaps the chip; it is valid (a positive) when its original size is in
    the chip's valid range, at least ``min_visible_fraction`` of it is inside, and it is no crowd box.
    """

    @configurable
    def __init__(self, *, chip_size, image_format="BGR", horizontal_flip=True, min_visible_fraction=0.5,
                 crowd_as_ignore=True, skip_bad_images=False, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
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
            max_image_pixels (int): larger images are unreadable (``SNIPER.INPUT.MAX_IMAGE_PIXELS``).
        """
        self.chip_size = chip_size
        self.image_format = image_format
        self.horizontal_flip = horizontal_flip
        self.min_visible_fraction = min_visible_fraction
        self.crowd_as_ignore = crowd_as_ignore
        self.skip_bad_images = skip_bad_images
        self.max_image_pixels = max_image_pixels
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
            "max_image_pixels": int(cfg.SNIPER.INPUT.MAX_IMAGE_PIXELS),
        }

    def _read_chip(self, dataset_dict):
        """The chip's content (h, w, 3) uint8 and its (h, w), reading only what it needs
        (:func:`sniper_d2.image_io.read_chip`)."""
        file_name = dataset_dict["file_name"]
        chip, scale = dataset_dict["chip"], float(dataset_dict["scale"])
        with open_image(file_name, self.image_format, 1.0 / scale, self.max_image_pixels) as reader:
            check_image_size(file_name, reader.image_size, (dataset_dict["height"], dataset_dict["width"]))
            pixels, _ = read_chip(reader, chip, scale, self.chip_size)
        return pixels, pixels.shape[:2]

    def _targets(self, dataset_dict):
        annos = dataset_dict.get("annotations", [])
        if not self.crowd_as_ignore:
            annos = [a for a in annos if not a.get("iscrowd", 0)]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                         np.float64).reshape(-1, 4)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in annos], bool)
        classes = np.array([a["category_id"] for a in annos], np.int64)
        chip, scale = dataset_dict["chip"], float(dataset_dict["scale"])
        extent = chip_content_extent(chip, scale, (dataset_dict["height"], dataset_dict["width"]), self.chip_size)
        keep, boxes_chip, valid = chip_targets(boxes, crowd, (float(chip[0]), float(chip[1])), scale, extent,
                                               dataset_dict["valid_range"], self.min_visible_fraction)
        # sqrt(w*h) of the unclipped boxes in chip pixels (focus labels, sniper_d2/modeling/focus.py)
        sizes = np.sqrt(np.maximum(boxes[keep, 2:] - boxes[keep, :2], 0.0).prod(axis=1)) * scale
        return boxes_chip, classes[keep], valid, sizes, crowd[keep]

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
        boxes_chip, classes, valid, sizes, crowd = self._targets(dataset_dict)
        if self.horizontal_flip and np.random.rand() < 0.5:
            content = content[:, ::-1]
            boxes_chip = np.stack([w - boxes_chip[:, 2], boxes_chip[:, 1], w - boxes_chip[:, 0], boxes_chip[:, 3]], 1)

        padded = np.zeros((self.chip_size, self.chip_size, content.shape[2]), np.uint8)
        padded[:h, :w] = content
        instances = Instances((self.chip_size, self.chip_size))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes_chip, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
        instances.gt_valid = torch.as_tensor(valid, dtype=torch.bool)
        instances.gt_sizes = torch.as_tensor(sizes, dtype=torch.float32)
        instances.gt_crowd = torch.as_tensor(crowd, dtype=torch.bool)
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
