"""Tiling a scaled image into overlapping windows, and the inner-border rule. Numpy only.

Frames: windows are XYXY in *scaled-image* pixels; :func:`tile_windows` covers the scaled image
with windows of ``tile_size`` overlapping by at least ``overlap``, shifted inward at the borders
(an image smaller than a tile is one window).
"""

import numpy as np

__all__ = ["axis_starts", "tile_windows", "touches_inner_border"]


def axis_starts(extent, tile, overlap):
    """Window start positions along one axis (pixels): 0, step, 2*step, ..., extent - tile."""
    if extent <= tile:
        return np.zeros(1, np.int64)
    step = max(1, tile - overlap)
    starts = np.arange(0, extent - tile, step, dtype=np.int64)
    return np.unique(np.append(starts, extent - tile))


def tile_windows(scaled_size, tile_size, overlap):
    """(T, 4) int64 XYXY windows, scaled pixels, covering an image of ``scaled_size`` (h, w)."""
    h, w = scaled_size
    xs = axis_starts(w, tile_size, overlap)
    ys = axis_starts(h, tile_size, overlap)
    x0, y0 = np.meshgrid(xs, ys)
    x0, y0 = x0.ravel(), y0.ravel()
    return np.stack([x0, y0, np.minimum(x0 + tile_size, w), np.minimum(y0 + tile_size, h)], axis=1)


def touches_inner_border(boxes_tile, window, scaled_size, margin=1.0):
    """(N,) bool: the box (tile pixels) touches a side of the window that is not an image border.

    Such a box may be cut by the window; an overlapping neighbour tile sees the object whole.

    Args:
        boxes_tile: (N, 4) XYXY in the window's pixels (0..window width/height).
        window: (4,) XYXY of the window in scaled-image pixels.
        scaled_size: (h, w) of the scaled image.
        margin (float): distance (pixels) within which a box counts as touching.
    """
    h, w = scaled_size
    ww, wh = window[2] - window[0], window[3] - window[1]
    b = np.asarray(boxes_tile, np.float64).reshape(-1, 4)
    left = (window[0] > 0) & (b[:, 0] <= margin)
    top = (window[1] > 0) & (b[:, 1] <= margin)
    right = (window[2] < w) & (b[:, 2] >= ww - margin)
    bottom = (window[3] < h) & (b[:, 3] >= wh - margin)
    return left | top | right | bottom
