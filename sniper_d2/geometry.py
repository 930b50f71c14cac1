"""Geometry shared by training chips, tiled inference and the proposal dump. Numpy and cv2 only.

Two jobs, one set of frames:

* **Cutting and resizing a region** (:func:`crop_and_scale`, :func:`warp_to_chip`): a region
  ``[x0, y0, x1, y1]`` of the original image (original pixels, floats allowed) resized by ``scale``
  is exactly the affine map

      x_out = (x - x0) * scale,    y_out = (y - y0) * scale

  for pixels and boxes alike (continuous coordinates, pixel ``j`` covering ``[j, j+1)``). Its
  content is ``scaled_length(min(x1, W) - x0, scale)`` pixels wide (rounded half up: the one rule
  for scaled sizes, :func:`scaled_length`), at most ``chip_size`` (:func:`chip_content_size`). Resampling: bilinear (``cv2.warpAffine`` with the exact matrix) when
  enlarging; when shrinking, a sub-pixel shift to the origin followed by ``cv2.resize(..., fx=f,
  interpolation=INTER_AREA)`` (area averaging, exact factor ``f``).
* **Tiling a scaled image** (:func:`tile_windows`, :func:`touches_inner_border`): windows are XYXY
  integer *scaled-image* pixels, ``tile_size`` wide and tall, starting every ``tile_size - overlap``
  pixels; the last one on each axis is shifted inward so it ends at the image border (it then
  overlaps its neighbour by more than ``overlap``). Every window lies inside the image; an image side
  shorter than ``tile_size`` gives one window per that axis, as long as the side.

:func:`touches_inner_border` works on numpy arrays and torch tensors alike (elementwise comparisons
only), so the predictor applies it on the model's device without this module importing torch.
"""

import math

import cv2
import numpy as np

__all__ = ["scaled_length", "scaled_size", "chip_content_size", "chip_content_extent", "warp_to_chip", "crop_and_scale", "axis_starts",
           "tile_windows", "touches_inner_border"]


def scaled_length(length, scale):
    """Pixels that ``length`` original pixels span at resize factor ``scale``, as an int.

    The one rounding rule for scaled sizes (chip content, scaled images, tiles, focus chips):
    half up, ``floor(length * scale + 0.5)`` (Python's ``round`` would round half to even).
    """
    return int(math.floor(length * scale + 0.5))


def scaled_size(image_size, scale):
    """(h, w) ints: an image of ``image_size`` (height, width) original pixels resized by ``scale``
    (:func:`scaled_length` per side)."""
    return scaled_length(image_size[0], scale), scaled_length(image_size[1], scale)


# ------------------------------------------------------------------------------------------------
# Cutting and resizing a region of the original image
# ------------------------------------------------------------------------------------------------
def chip_content_size(chip, scale, image_size, chip_size):
    """(h, w) in pixels of the image content of a chip: the part of the chip inside the image,
    scaled by ``scale``, at most ``chip_size`` per side.

    Args:
        chip: (4,) XYXY in original pixels. scale (float): resize factor.
        image_size: (H, W) of the original image. chip_size (int): the largest output side.

    Raises:
        ValueError: the chip has no pixel inside the image.
    """
    h, w = image_size
    if chip[0] < -1e-6 or chip[1] < -1e-6:
        raise ValueError(f"chip {[float(v) for v in chip]} starts outside the {w}x{h} image")
    out_w = min(chip_size, scaled_length(min(chip[2], w) - max(chip[0], 0.0), scale))
    out_h = min(chip_size, scaled_length(min(chip[3], h) - max(chip[1], 0.0), scale))
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"chip {[float(v) for v in chip]} at scale {scale} has no pixel inside the {w}x{h} image")
    return out_h, out_w


def chip_content_extent(chip, scale, image_size, chip_size):
    """(h, w) floats: the chip's part inside the image, in chip pixels (at most ``chip_size``).

    Unlike :func:`chip_content_size` not rounded: the area boxes mapped into the chip are clipped to.

    Args:
        chip: (4,) XYXY in original pixels. scale (float): resize factor.
        image_size: (H, W) of the original image. chip_size (int): the largest side.
    """
    h, w = image_size
    return (min(float(chip_size), (min(chip[3], h) - chip[1]) * scale),
            min(float(chip_size), (min(chip[2], w) - chip[0]) * scale))


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
        (region (h, w, C) uint8, (x0, y0) chip origin in original pixels): an original point ``x``
        is at ``(x - x0) * scale`` in ``region``.
    """
    out_size = chip_content_size(chip, scale, image.shape[:2], chip_size)
    x0, y0 = float(chip[0]), float(chip[1])
    return warp_to_chip(image, (x0, y0), scale, out_size), (x0, y0)


# ------------------------------------------------------------------------------------------------
# Tiling a scaled image
# ------------------------------------------------------------------------------------------------
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
