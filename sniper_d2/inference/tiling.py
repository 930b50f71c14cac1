"""Tiling a scaled image into overlapping windows, and the inner-border rule.

No torch or detectron2 import: :func:`tile_windows` is numpy; :func:`touches_inner_border` works on
numpy arrays and torch tensors alike (elementwise comparisons only), so the predictor applies it on
the model's device.

Frames: windows are XYXY integer *scaled-image* pixels. Windows are ``tile_size`` wide and tall,
start every ``tile_size - overlap`` pixels, and the last one on each axis is shifted inward so it
ends at the image border (it then overlaps its neighbour by more than ``overlap``). Every window
lies inside the image; an image side shorter than ``tile_size`` gives one window per that axis,
as long as the side (a small image is one window, the whole image).
"""

import numpy as np

__all__ = ["axis_starts", "tile_windows", "touches_inner_border"]


def axis_starts(extent, tile, overlap):
    """(K,) int64 window starts along one axis: 0, step, 2 * step, ..., and ``extent - tile`` last.

    Args:
        extent (int): image side, scaled pixels. tile (int): window side. overlap (int): minimum
            overlap of neighbouring windows, ``0 <= overlap < tile``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile size {tile}), got {overlap}")
    if extent <= tile:
        return np.zeros(1, np.int64)
    step = tile - overlap
    starts = np.arange(0, extent - tile, step, dtype=np.int64)
    return np.append(starts, np.int64(extent - tile))


def tile_windows(scaled_size, tile_size, overlap):
    """Windows covering a scaled image.

    Args:
        scaled_size: (h, w) of the scaled image, pixels.
        tile_size (int): window side, scaled pixels.
        overlap (int): minimum overlap of neighbouring windows, scaled pixels.

    Returns:
        (T, 4) int64 XYXY windows in scaled-image pixels, row-major (y, then x).
    """
    h, w = (int(v) for v in scaled_size)
    xs = axis_starts(w, tile_size, overlap)
    ys = axis_starts(h, tile_size, overlap)
    x0, y0 = np.meshgrid(xs, ys)
    x0, y0 = x0.ravel(), y0.ravel()
    return np.stack([x0, y0, np.minimum(x0 + tile_size, w), np.minimum(y0 + tile_size, h)], axis=1)


def touches_inner_border(boxes_tile, tile_size, inner_sides, margin=1.0):
    """Which boxes touch a side of their tile that is not an image border.

    Such a box may be cut by the tile; since neighbouring tiles overlap by more than the objects kept
    at that scale, another tile sees the object whole, so this one's (possibly cut) box is dropped.

    Args:
        boxes_tile: (N, 4) XYXY in tile pixels (numpy array or torch tensor).
        tile_size: (w, h) of the tile content, pixels.
        inner_sides: (left, top, right, bottom) bools: True where that side of the tile is inside
            the image (a neighbouring tile lies beyond it).
        margin (float): a box side within this many pixels of the tile side touches it.

    Returns:
        (N,) bool array/tensor, the type of ``boxes_tile``.
    """
    tw, th = tile_size
    left, top, right, bottom = (bool(v) for v in inner_sides)
    b = boxes_tile.reshape(-1, 4)
    touch = b[:, 0] < -np.inf  # all False, in the input's type and device
    if left:
        touch = touch | (b[:, 0] <= margin)
    if top:
        touch = touch | (b[:, 1] <= margin)
    if right:
        touch = touch | (b[:, 2] >= tw - margin)
    if bottom:
        touch = touch | (b[:, 3] >= th - margin)
    return touch
