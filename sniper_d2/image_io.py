"""Reading images robustly: EXIF rotation, gray/RGBA/palette/16-bit, and errors that name the file.

Like detectron2's ``read_image`` but stricter: a truncated or corrupt file raises
:class:`ImageReadError` (PIL's ``LOAD_TRUNCATED_IMAGES`` is forced off while decoding, and decoding
is forced), never a half-grey picture. :func:`read_image_size` reads only the header.
:func:`read_image_region` decodes what a chip needs: for a JPEG read at a reduced resolution it
lets libjpeg decode at 1/2, 1/4 or 1/8 size (``Image.draft``), and it holds one decoded copy of
the image at most.

Frames: every coordinate here is in pixels of the image *after* EXIF rotation (what the data set's
``height``/``width`` describe); pixel ``(row i, col j)`` covers the area ``[j, j+1) x [i, i+1)``.
"""

import contextlib
import math
import os
from typing import NamedTuple, Tuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "ImageRegion", "read_image", "read_image_region", "read_image_size"]

_EXIF_ORIENTATION = 0x0112
# EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSING = (5, 6, 7, 8)


class ImageReadError(RuntimeError):
    """An image cannot be read; ``file_name`` and ``reason`` say which and why."""

    def __init__(self, file_name, reason):
        super().__init__(f"{file_name}: {reason}")
        self.file_name = file_name
        self.reason = reason


class ImageRegion(NamedTuple):
    """Pixels of a region of an image, possibly decoded at a reduced resolution.

    Pixel ``(i, j)`` of ``pixels`` covers the original-image area
    ``[x0 + j * r, x0 + (j + 1) * r) x [y0 + i * r, y0 + (i + 1) * r)`` with ``(x0, y0) = origin``
    and ``r = reduction``; so an original-image point ``x`` lies at ``(x - x0) / r`` in ``pixels``.
    """

    pixels: np.ndarray  # (h, w, 3) uint8 in the requested channel order
    origin: Tuple[int, int]  # (x0, y0) original (EXIF-rotated) pixels
    reduction: int  # 1, 2, 4 or 8
    image_size: Tuple[int, int]  # (height, width) of the whole image after EXIF rotation


@contextlib.contextmanager
def _open(file_name):
    """``Image.open`` with errors naming the file; truncated data is never accepted.

    PIL's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is held False while the file is open (data
    loader workers are processes, so no other thread reads it meanwhile).
    """
    if not os.path.isfile(file_name):
        raise ImageReadError(file_name, "image file not found")
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # for this read only; the caller's setting is restored
    try:
        try:
            img = Image.open(file_name)
        except (UnidentifiedImageError, OSError) as e:
            raise ImageReadError(file_name, f"not a readable image ({e})") from e
        with img:
            yield img
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _orientation(img):
    """EXIF orientation tag (1..8); 1 when absent or unreadable (pixels are then used as stored)."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1  # PNG's getexif() would decode the whole image to look for an eXIf chunk after IDAT
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):  # a broken EXIF block
        return 1
    return value if value in range(1, 9) else 1


def read_image_size(file_name):
    """(height, width) after EXIF rotation, from the header only (no pixel is decoded)."""
    with _open(file_name) as img:
        w, h = img.size
        transposed = _orientation(img) in _TRANSPOSING
    return (w, h) if transposed else (h, w)


def _raw_bits(img):
    """16 when the file stores 16-bit samples that PIL opens as an integer mode ("I;16*" or "I")."""
    if img.mode.startswith("I;16"):
        return 16
    if img.mode == "I" and img.tile:
        args = img.tile[0][3]
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        if isinstance(rawmode, str) and rawmode.startswith("I;16"):
            return 16  # e.g. a 16-bit grayscale PNG, opened as 32-bit "I"
    return None


def _to_uint8_rgb(img, file_name, raw_bits):
    """PIL image of any common mode -> (H, W, 3) uint8 RGB array.

    16-bit samples keep their top 8 bits (``>> 8``), so 65535 -> 255 and brightness ratios stay as
    stored. 32-bit integer images of unknown depth are shifted just enough to fit 8 bits. RGBA / LA /
    PA / palette-with-transparency images are composited on black (fully transparent pixels are
    black, opaque ones keep their colour).
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        if raw_bits == 16:
            shift = 8
        else:  # depth unknown: 8-bit data in a wide type stays as is, wider data keeps its top byte
            peak = int(arr.max()) if arr.size else 0
            shift = max(0, peak.bit_length() - 8)
        gray = np.clip(arr >> shift, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.asarray(img, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    try:
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as e:
        raise ImageReadError(file_name, f"unsupported image mode {img.mode!r} ({e})") from e


def _decode(img, file_name):
    """Decode ``img`` now (truncated data raises) and apply its EXIF orientation.

    Returns (image, raw_bits). No copy is made when the orientation is the identity.
    """
    raw_bits = _raw_bits(img)  # from the tile descriptor, which decoding clears
    orientation = _orientation(img)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(file_name, f"corrupt or truncated image data ({e})") from e
    if orientation == 1:
        return img, raw_bits
    return ImageOps.exif_transpose(img), raw_bits


def _check_format(format):
    if format not in ("BGR", "RGB"):
        raise ValueError(f"format must be 'BGR' or 'RGB', got {format!r}")


def _in_format(rgb, format):
    return np.ascontiguousarray(rgb[..., ::-1]) if format == "BGR" else rgb


def read_image(file_name, format="BGR"):
    """Read a whole image, applying its EXIF orientation.

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
        decoded, raw_bits = _decode(img, file_name)
        rgb = _to_uint8_rgb(decoded, file_name, raw_bits)
    return _in_format(rgb, format)


def _draft(img, orientation, max_reduction):
    """Ask libjpeg to decode ``img`` at 1/r size (r <= max_reduction, a power of 2); returns r.

    Only for JPEGs, and only where the reduced pixel grid stays aligned with the original one after
    EXIF rotation (no rotation, or both sides divisible by r).
    """
    r = 1 << int(min(3, math.floor(math.log2(max(1.0, max_reduction)) + 1e-9)))
    if r == 1 or img.format != "JPEG":
        return 1
    w, h = img.size
    while r > 1 and orientation != 1 and (w % r or h % r):
        r //= 2
    if r == 1 or w // r == 0 or h // r == 0:
        return 1
    img.draft(img.mode, (w // r, h // r))
    new_w, new_h = img.size
    for got in (8, 4, 2, 1):
        if (-(-w // got), -(-h // got)) == (new_w, new_h):
            return got
    return 1  # pragma: no cover  (libjpeg always reduces by a power of 2)


def read_image_region(file_name, region, format="BGR", max_reduction=1):
    """Read the pixels of a region of an image, holding one decoded copy of the image at most.

    Args:
        file_name (str): path.
        region: (x0, y0, x1, y1) in original (EXIF-rotated) pixels, floats allowed; the returned
            pixels cover it (grown to whole pixels of the reduced grid) clipped to the image.
        format (str): "BGR" or "RGB".
        max_reduction (float): the caller can use pixels at 1/r resolution for any r up to this;
            JPEGs are then decoded at 1/2, 1/4 or 1/8 size (the largest such r). Pass 1 for full
            resolution (other formats always give full resolution).

    Returns:
        ImageRegion: pixels (h, w, 3) uint8, origin, reduction, image_size (see :class:`ImageRegion`).

    Raises:
        ImageReadError: missing/corrupt/truncated file, or a region that misses the image.
    """
    _check_format(format)
    with _open(file_name) as img:
        orientation = _orientation(img)
        w, h = img.size
        height, width = (w, h) if orientation in _TRANSPOSING else (h, w)
        r = _draft(img, orientation, max_reduction)
        decoded, raw_bits = _decode(img, file_name)
        x0 = max(0, int(math.floor(region[0] / r)))
        y0 = max(0, int(math.floor(region[1] / r)))
        x1 = min(decoded.size[0], int(math.ceil(region[2] / r)))
        y1 = min(decoded.size[1], int(math.ceil(region[3] / r)))
        if x1 <= x0 or y1 <= y0:
            raise ImageReadError(file_name, f"region {[float(v) for v in region]} lies outside the "
                                 f"{width}x{height} image")
        crop = decoded.crop((x0, y0, x1, y1))
        del decoded  # the transposed copy, if any: free it before converting the crop
        rgb = _to_uint8_rgb(crop, file_name, raw_bits)
    return ImageRegion(_in_format(rgb, format), (x0 * r, y0 * r), r, (height, width))
