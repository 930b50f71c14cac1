"""Reading images robustly: EXIF rotation, gray/RGBA/palette/16-bit, and errors that name the file.

Like detectron2's ``read_image`` but stricter: a truncated or corrupt file raises
:class:`ImageReadError` (PIL's ``LOAD_TRUNCATED_IMAGES`` stays off, and decoding is forced), never a
half-grey picture. :func:`read_image_size` reads only the header.
"""

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image", "read_image_region", "read_image_size"]

_EXIF_ORIENTATION = 0x0112


class ImageReadError(RuntimeError):
    """An image cannot be read; ``file_name`` and ``reason`` say which and why."""

    def __init__(self, file_name, reason):
        super().__init__(f"{file_name}: {reason}")
        self.file_name = file_name
        self.reason = reason


def _open(file_name):
    if not os.path.isfile(file_name):
        raise ImageReadError(file_name, "image file not found")
    try:
        return Image.open(file_name)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageReadError(file_name, f"not a readable image ({e})") from e


def read_image_size(file_name):
    """(height, width) after EXIF rotation, from the header only."""
    with _open(file_name) as img:
        w, h = img.size
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except (OSError, ValueError):  # a broken EXIF block: sizes as stored
            orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _to_uint8_rgb(img, file_name):
    """PIL image of any common mode -> (H, W, 3) uint8 RGB array."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit images (PIL often opens 16-bit PNGs as 32-bit mode "I"): keep the top 8 bits of
        # the 16-bit range; 8-bit data stored in a wider type is kept as is.
        arr = np.asarray(img).astype(np.int64)
        peak = int(arr.max()) if arr.size else 0
        shift = 0 if peak <= 255 else (8 if peak <= 65535 else 24)
        gray = np.clip(arr >> shift, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        # Composite on black, as detectron2 would see the colour channels of an opaque image.
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    try:
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as e:
        raise ImageReadError(file_name, f"unsupported image mode {img.mode!r} ({e})") from e


def _load_oriented(img, file_name):
    """Decode ``img`` and apply its EXIF orientation (no extra copy when there is none)."""
    try:
        img.load()  # decode now: truncated data raises here
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except (OSError, ValueError):  # a broken EXIF block: pixels as stored
            orientation = 1
        return ImageOps.exif_transpose(img) if orientation in range(2, 9) else img
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(file_name, f"corrupt or truncated image data ({e})") from e


def _check_format(format):
    if format not in ("BGR", "RGB"):
        raise ValueError(f"format must be 'BGR' or 'RGB', got {format!r}")


def read_image(file_name, format="BGR"):
    """Read an image, applying its EXIF orientation.

    Args:
        file_name (str): path.
        format (str): "BGR" (detectron2's default input format) or "RGB".

    Returns:
        np.ndarray: (H, W, 3) uint8 in ``format``; H, W after EXIF rotation.

    Raises:
        ImageReadError: missing, truncated, corrupt, or of an unsupported mode.
    """
    _check_format(format)
    with _open(file_name) as img:
        rgb = _to_uint8_rgb(_load_oriented(img, file_name), file_name)
    return np.ascontiguousarray(rgb[..., ::-1]) if format == "BGR" else rgb


def read_image_region(file_name, region, format="BGR"):
    """Read only a region of an image (after EXIF rotation), holding one decoded copy at most.

    Args:
        file_name (str): path.
        region: (x0, y0, x1, y1) ints in (EXIF-rotated) image pixels; clipped to the image.
        format (str): "BGR" or "RGB".

    Returns:
        (crop (h, w, 3) uint8, (height, width) of the whole image after EXIF rotation).
    """
    _check_format(format)
    with _open(file_name) as img:
        oriented = _load_oriented(img, file_name)
        width, height = oriented.size
        x0, y0 = max(0, int(region[0])), max(0, int(region[1]))
        x1, y1 = min(width, int(region[2])), min(height, int(region[3]))
        if x1 <= x0 or y1 <= y0:
            raise ImageReadError(file_name, f"region {list(region)} lies outside the {width}x{height} image")
        crop = oriented.crop((x0, y0, x1, y1))
        del oriented
        rgb = _to_uint8_rgb(crop, file_name)
    return (np.ascontiguousarray(rgb[..., ::-1]) if format == "BGR" else rgb), (height, width)
