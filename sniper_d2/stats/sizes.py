"""Object and image sizes of a data set. Numpy only.

Sizes are ``sqrt(w * h)`` of boxes in original-image pixels ("absolute"), and that divided by
``sqrt(H * W)`` of the image ("relative"). Crowd boxes are left out.
"""

import math

import numpy as np

from ..coco import non_crowd_boxes

__all__ = ["image_sizes", "object_sizes", "size_summary"]


def image_sizes(records):
    """(M, 2) float64 (height, width) of every image."""
    return np.array([(r["height"], r["width"]) for r in records], np.float64).reshape(-1, 2)


def object_sizes(records):
    """Object sizes of a data set, crowd boxes left out.

    Args:
        records (list[dict]): see :func:`sniper_d2.coco.load_coco_records`.

    Returns:
        (absolute (N,) float64 sqrt(w*h) in original pixels,
         relative (N,) float64 absolute / sqrt(H*W) of its image,
         image_index (N,) int64 index into ``records``)
    """
    per_image = [non_crowd_boxes(r) for r in records]
    counts = np.array([len(b) for b in per_image], np.int64)
    if counts.sum() == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    boxes = np.concatenate(per_image).astype(np.float64)
    image_index = np.repeat(np.arange(len(records)), counts)
    absolute = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    sizes = image_sizes(records)
    relative = absolute / np.sqrt(sizes[image_index, 0] * sizes[image_index, 1])
    return absolute, relative, image_index


def size_summary(absolute, relative, percentiles=(1, 2, 5, 10, 25, 50, 75, 90, 95, 98, 99)):
    """Text table of size percentiles (absolute px and relative to the image)."""
    if len(absolute) == 0:
        return "no objects"
    pa = np.percentile(absolute, percentiles)
    pr = np.percentile(relative, percentiles)
    lines = [f"{'percentile':>10} {'sqrt(area) px':>14} {'relative':>9}"]
    lines += [f"{p:>10} {a:>14.1f} {r:>9.4f}" for p, a, r in zip(percentiles, pa, pr)]
    edges = np.array([0, 8, 16, 32, 64, 128, 256, 512, np.inf])
    hist = np.histogram(absolute, edges)[0]
    lines.append("size bands (px): " + ", ".join(
        f"[{int(lo)},{'inf' if math.isinf(hi) else int(hi)}): {n}" for lo, hi, n in zip(edges[:-1], edges[1:], hist)))
    return "\n".join(lines)
