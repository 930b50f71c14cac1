"""One windowed image reader for every path: rasterio (GDAL) under training chips, test tiles,
AutoFocus, evaluation and the proposal dump.

:func:`open_image` returns an :class:`ImageReader`; :meth:`ImageReader.read_region` serves any
window of the image, at full resolution or reduced by a power of 2, and :meth:`ImageReader.read_valid_mask`
the same window of the nodata / alpha mask. GDAL reads the formats (GeoTIFF and Cloud-Optimized
GeoTIFF, tiled or striped, BigTIFF, JPEG/YCbCr, LZW, Deflate, ZSTD, WebP, packbits; JPEG, PNG, WebP,
BMP, GIF), 8 or 16 bit, 1 to 4 bands:

* **TIFFs** are read by windows: only the blocks a window touches are decoded. A reduced read
  (``out_shape``) comes from the internal overview of that level when the file has one (GDAL picks
  it), else from averaging the full-resolution pixels.
* **Other formats** (JPEG, PNG, ...) store their pixels as one stream. Up to
  :data:`DECODE_ONCE_MAX_PIXELS` decoded pixels, the image is decoded once when opened (a JPEG at
  1/2, 1/4 or 1/8 size by libjpeg's reduced decoding when the caller allows it) and windows are cut
  from that one copy. A larger image is read by rows: GDAL decodes the stream down to the window's
  last row (its block cache keeps recent rows, so windows read in row order decode each row once),
  never holding the whole image.

Pillow is not used for pixels (no ``DecompressionBombError``); the image size limit is
``SNIPER.INPUT.MAX_IMAGE_PIXELS`` (:func:`check_pixel_limit`). Truncated or corrupt data raises
:class:`ImageReadError` naming the file (libjpeg warnings are errors; a PNG must end with its IEND
chunk). EXIF orientation: GDAL ignores it, so the tag is read from the header (JPEG: GDAL's
``EXIF_Orientation``; PNG and TIFF: Pillow's header parser, no decoding) and every window is mapped
through it. Colour: gray, gray+alpha, palette, RGB, RGBA, 16 bit -> uint8 RGB/BGR (16 bit keeps the
top byte; alpha is composited on black).

Frames: every coordinate here is in pixels of the image *after* EXIF rotation (what the data set's
``height``/``width`` describe); pixel ``(row i, col j)`` covers the area ``[j, j+1) x [i, i+1)``.
A reduced grid of factor ``r`` has ``floor(W / r) x floor(H / r)`` pixels (a last partial block is
left out), pixel ``j`` covering ``[j * r, (j + 1) * r)``.

Numpy only at import: rasterio is imported when the first image is opened.
"""

import math
import os
import warnings
from typing import NamedTuple, Tuple

import numpy as np

__all__ = ["ImageReadError", "ImageRegion", "ImageReader", "open_image", "read_chip", "read_chip_valid_mask",
           "read_image", "read_image_region", "read_image_size", "check_image_size", "check_pixel_limit",
           "DEFAULT_MAX_IMAGE_PIXELS", "DECODE_ONCE_MAX_PIXELS"]

# SNIPER.INPUT.MAX_IMAGE_PIXELS's default: 10 gigapixels (a 100k x 100k mosaic).
DEFAULT_MAX_IMAGE_PIXELS = 10_000_000_000
# Non-TIFF images whose decoded pixels (at the reader's reduction) stay below this are decoded once
# when opened; larger ones are read by rows (see the module docstring).
DECODE_ONCE_MAX_PIXELS = 64_000_000
# GDAL's block cache (MB): the rows / blocks recently decoded, shared by the readers of a process.
GDAL_CACHE_MB = 256
# Rows of a window converted at a time when a large window is read (bounds the temporary arrays).
_CHUNK_PIXELS = 1 << 22
_WINDOWED_DRIVERS = ("GTiff", "COG")
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
    """Pixels of a region of an image, possibly read at a reduced resolution.

    Pixel ``(i, j)`` of ``pixels`` covers the original-image area
    ``[x0 + j * r, x0 + (j + 1) * r) x [y0 + i * r, y0 + (i + 1) * r)`` with ``(x0, y0) = origin``
    and ``r = reduction``; so an original-image point ``x`` lies at ``(x - x0) / r`` in ``pixels``.
    """

    pixels: np.ndarray  # (h, w, 3) uint8 in the requested channel order; (h, w) bool for masks
    origin: Tuple[int, int]  # (x0, y0) original (EXIF-rotated) pixels
    reduction: int  # a power of 2
    image_size: Tuple[int, int]  # (height, width) of the whole image after EXIF rotation


def check_pixel_limit(file_name, image_size, max_image_pixels):
    """Raise :class:`ImageReadError` naming ``SNIPER.INPUT.MAX_IMAGE_PIXELS`` when H * W exceeds it.

    Args:
        image_size: (H, W) pixels. max_image_pixels (int or None): the limit; None or <= 0: none.
    """
    h, w = image_size
    if max_image_pixels is not None and max_image_pixels > 0 and h * w > max_image_pixels:
        raise ImageReadError(file_name, f"image is {w}x{h} = {h * w} pixels, more than SNIPER.INPUT.MAX_IMAGE_PIXELS "
                             f"({int(max_image_pixels)}); raise that key to read it")


def check_image_size(file_name, image_size, expected_size):
    """Raise :class:`ImageReadError` when an image's (H, W) is not the data set's ``expected_size``.

    The one size check of the mapper, the tile pipeline and evaluation: boxes are measured in the
    data set's frame, so another size would misplace them. ``expected_size`` None: no check.
    """
    if expected_size is None or None in tuple(expected_size):
        return
    (h, w), (eh, ew) = (int(v) for v in image_size), (int(v) for v in expected_size)
    if (h, w) != (eh, ew):
        raise ImageReadError(file_name, f"image is {w}x{h} (WxH, after EXIF rotation) but the data set says "
                             f"{ew}x{eh}; its boxes would not match")


def _rasterio():
    import rasterio  # noqa: F401  (imported on first use: `import sniper_d2.image_io` stays numpy-only)
    from rasterio.enums import ColorInterp, MaskFlags, Resampling  # noqa: F401
    from rasterio.windows import Window  # noqa: F401

    return rasterio


def _env():
    """GDAL settings of every open and read: libjpeg warnings (truncated data) are errors; block cache size."""
    return _rasterio().Env(GDAL_ERROR_ON_LIBJPEG_WARNING=True, GDAL_CACHEMAX=GDAL_CACHE_MB,
                           GDAL_DISABLE_READDIR_ON_OPEN=True)


def _open_dataset(file_name):
    rasterio = _rasterio()
    if not os.path.isfile(file_name):
        raise ImageReadError(file_name, "image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with _env():
                return rasterio.open(file_name)
    except rasterio.errors.RasterioError as e:
        raise ImageReadError(file_name, f"not a readable image ({e})") from e


def _header_orientation(file_name, driver, tags):
    """EXIF orientation (1..8) from the header only; 1 when absent or unreadable (pixels used as stored)."""
    value = None
    if driver == "JPEG":
        value = tags.get("EXIF_Orientation")
    elif driver in ("PNG", "GTiff"):
        from PIL import PngImagePlugin, TiffImagePlugin

        cls = PngImagePlugin.PngImageFile if driver == "PNG" else TiffImagePlugin.TiffImageFile
        try:  # the plugin's header parser: no decoding, no decompression-bomb check
            with cls(file_name) as img:
                if driver == "PNG" and "exif" not in img.info:
                    return 1  # getexif() would decode the image to look for an eXIf chunk after IDAT
                value = img.getexif().get(_EXIF_ORIENTATION)
        except (OSError, ValueError, SyntaxError, TypeError, KeyError):  # not parseable by Pillow (e.g. BigTIFF)
            return 1
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _png_is_complete(file_name):
    """True when the file ends with PNG's IEND chunk (GDAL reads a cut PNG without an error)."""
    with open(file_name, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 12:
            return False
        f.seek(-12, os.SEEK_END)
        return f.read(12) == b"\x00\x00\x00\x00IEND\xaeB`\x82"


# numpy equivalents of PIL's exif_transpose per EXIF orientation: stored pixels -> displayed pixels.
_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _stored_window(window, orientation, stored_size):
    """Integer window (x0, y0, x1, y1) of the displayed (EXIF-rotated) image -> the stored pixels' window.

    ``stored_size``: (w, h) of the stored pixel grid. Reading the stored window and applying
    ``_ORIENT[orientation]`` gives the displayed window's pixels.
    """
    x0, y0, x1, y1 = window
    ws, hs = stored_size
    return {
        1: (x0, y0, x1, y1),
        2: (ws - x1, y0, ws - x0, y1),
        3: (ws - x1, hs - y1, ws - x0, hs - y0),
        4: (x0, hs - y1, x1, hs - y0),
        5: (y0, x0, y1, x1),
        6: (y0, hs - x1, y1, hs - x0),
        7: (ws - y1, hs - x1, ws - y0, hs - x0),
        8: (ws - y1, x0, ws - y0, x1),
    }[orientation]


class _Bands:
    """Which bands of a dataset make the picture and how they become uint8 RGB."""

    def __init__(self, ds, file_name):
        from rasterio.enums import ColorInterp

        interp = list(ds.colorinterp)
        alpha = [i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha]
        colour = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
        self.lut = None
        if len(colour) == 1 and interp[colour[0] - 1] == ColorInterp.palette:
            table = ds.colormap(colour[0])
            self.lut = np.zeros((256, 4), np.uint8)
            self.lut[:, 3] = 255
            for k, rgba in table.items():
                if 0 <= k < 256:
                    self.lut[k] = rgba
        self.colour = colour[:3] if len(colour) >= 3 else colour[:1]
        if not self.colour:
            raise ImageReadError(file_name, "no colour band (alpha only)")
        if self.lut is None and len(colour) == 4 and not alpha and ds.count == 4:
            alpha = [4]  # RGB + an undeclared 4th band: treated as alpha, as Pillow treats RGBA
            self.colour = colour[:3]
        self.alpha = alpha[:1]
        self.indexes = self.colour + self.alpha
        self.dtype = np.dtype(ds.dtypes[self.colour[0] - 1])
        if self.dtype.kind not in "uif" or (self.lut is not None and self.dtype != np.uint8):
            raise ImageReadError(file_name, f"unsupported sample type {self.dtype}")
        self.shift = None  # integer samples wider than 16 bit: set from the whole image's peak when decoded once

    def resampling(self, reduction):
        from rasterio.enums import Resampling

        return Resampling.nearest if reduction == 1 or self.lut is not None else Resampling.average

    def to_pixels(self, data, format):
        """(C, h, w) samples of ``indexes`` -> (h, w, 3) uint8 in ``format`` (alpha composited on black)."""
        n = len(self.colour)
        colour = self._to_uint8(data[:n])
        if self.lut is not None:
            rgba = self.lut[colour[0]]
            rgb, alpha = rgba[..., :3], (rgba[..., 3] if (self.lut[:, 3] < 255).any() else None)
        else:
            rgb = colour.transpose(1, 2, 0)
            if n == 1:
                rgb = np.repeat(rgb, 3, axis=2)
            alpha = self._to_uint8(data[n:n + 1])[0] if self.alpha else None
        if alpha is not None:
            rgb = ((rgb.astype(np.uint16) * alpha[..., None] + 127) // 255).astype(np.uint8)
        return np.ascontiguousarray(rgb[..., ::-1] if format == "BGR" else rgb)

    def _to_uint8(self, data):
        if data.dtype == np.uint8:
            return data
        if data.dtype.kind == "f":
            return np.clip(np.nan_to_num(data), 0, 255).astype(np.uint8)
        shift = 8 if data.dtype.itemsize == 2 else (self.shift or 0)
        return np.clip(data.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


class ImageReader:
    """An open image serving windows of its pixels and of its valid-data mask (see :func:`open_image`).

    Attributes:
        file_name (str). format (str): "BGR" or "RGB".
        image_size: (height, width) after EXIF rotation, original pixels.
        has_mask (bool): the image has a nodata value, an alpha band or an internal mask; without
            one every pixel is valid.
        decoded_once (bool): the pixels were decoded when opening (non-TIFF formats, see the module).
    """

    def __init__(self, file_name, format="BGR", max_reduction=1.0, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                 decode_once=True):
        _check_format(format)
        self.file_name, self.format = file_name, format
        self._ds = _open_dataset(file_name)
        try:
            self._open(max_reduction, max_image_pixels, decode_once)
        except BaseException:
            self.close()
            raise

    def _open(self, max_reduction, max_image_pixels, decode_once):
        from rasterio.enums import MaskFlags

        ds = self._ds
        self.stored_size = (ds.width, ds.height)
        self.orientation = _header_orientation(self.file_name, ds.driver, ds.tags())
        w, h = self.stored_size
        self.image_size = (w, h) if self.orientation in _TRANSPOSING else (h, w)
        check_pixel_limit(self.file_name, self.image_size, max_image_pixels)
        if ds.driver == "PNG" and not _png_is_complete(self.file_name):
            raise ImageReadError(self.file_name, "corrupt or truncated image data (no IEND chunk at the end)")
        self._bands = _Bands(ds, self.file_name)
        self.has_mask = any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)
        self._decoded = None  # (reduction, (h, w, 3) uint8 in format, stored order, (h, w) bool mask or None)
        if callable(max_reduction):
            max_reduction = max_reduction(self.image_size)
        r = self.best_reduction(max_reduction)
        if decode_once and ds.driver not in _WINDOWED_DRIVERS and (w // r) * (h // r) <= DECODE_ONCE_MAX_PIXELS:
            self._decode_once(r)
        elif self._bands.dtype.kind in "iu" and self._bands.dtype.itemsize > 2:
            raise ImageReadError(self.file_name, f"{self._bands.dtype} samples are read only from images decoded "
                                 f"whole (at most {DECODE_ONCE_MAX_PIXELS} pixels)")

    @property
    def decoded_once(self):
        return self._decoded is not None

    def best_reduction(self, max_reduction):
        """Largest power of 2 <= ``max_reduction`` (<= 64) the image allows; 1 for full resolution.

        The reduced grid must keep at least one pixel per side, and for a rotated image (EXIF) both
        sides must be divisible by it (the left-out partial blocks must lie right and bottom).
        """
        if self._decoded is not None:
            return self._decoded[0]
        w, h = self.stored_size
        r = 1
        while 2 * r <= max_reduction + 1e-9 and 2 * r <= 64 and w // (2 * r) >= 1 and h // (2 * r) >= 1 \
                and (self.orientation == 1 or (w % (2 * r) == 0 and h % (2 * r) == 0)):
            r *= 2
        return r

    # --- reading --------------------------------------------------------------------------------
    def _read(self, stored_window, r, mask=False):
        """(h, w, 3) uint8 in the reader's format (or (h, w) bool valid mask) of a window of the
        reduced stored grid; a large window is read and converted a few rows at a time."""
        x0, y0, x1, y1 = stored_window
        if self._decoded is not None:
            _, pixels, valid = self._decoded  # windows are copies: callers may write into them
            if mask:
                return np.ones((y1 - y0, x1 - x0), bool) if valid is None else valid[y0:y1, x0:x1].copy()
            return pixels[y0:y1, x0:x1].copy()
        out = np.empty((y1 - y0, x1 - x0) if mask else (y1 - y0, x1 - x0, 3), bool if mask else np.uint8)
        rows = max(1, _CHUNK_PIXELS // max(1, x1 - x0))
        for top in range(y0, y1, rows):
            bottom = min(y1, top + rows)
            out[top - y0:bottom - y0] = self._read_rows((x0, top, x1, bottom), r, mask)
        return out

    def _read_rows(self, window, r, mask):
        from rasterio.windows import Window

        x0, y0, x1, y1 = window
        win = Window(x0 * r, y0 * r, (x1 - x0) * r, (y1 - y0) * r)
        b = self._bands
        try:
            with _env():
                if mask:
                    return self._ds.dataset_mask(window=win, out_shape=(y1 - y0, x1 - x0)) > 0
                data = self._ds.read(b.indexes, window=win, out_shape=(len(b.indexes), y1 - y0, x1 - x0),
                                     resampling=b.resampling(r))
        except _rasterio().errors.RasterioError as e:
            raise ImageReadError(self.file_name, f"corrupt or truncated image data ({e})") from e
        return b.to_pixels(data, self.format)

    def _decode_once(self, r):
        w, h = self.stored_size
        window = (0, 0, w // r, h // r)
        if self._bands.dtype.kind in "iu" and self._bands.dtype.itemsize > 2:  # depth unknown: the peak decides
            self._bands.shift = 0
            peak = max(int(self._ds.statistics(i, approx=False).max) for i in self._bands.colour)
            self._bands.shift = max(0, peak.bit_length() - 8)
        pixels = self._read(window, r)
        valid = self._read(window, r, mask=True) if self.has_mask else None
        self._decoded = (r, pixels, valid)

    def _window(self, region, max_reduction):
        """region (x0, y0, x1, y1) original px -> (displayed reduced window, stored reduced window, r)."""
        r = self.best_reduction(max_reduction)
        height, width = self.image_size
        x0 = max(0, int(math.floor(region[0] / r)))
        y0 = max(0, int(math.floor(region[1] / r)))
        x1 = min(width // r, int(math.ceil(region[2] / r)))
        y1 = min(height // r, int(math.ceil(region[3] / r)))
        if x1 <= x0 or y1 <= y0:
            raise ImageReadError(self.file_name, f"region {[float(v) for v in region]} lies outside the "
                                 f"{width}x{height} image")
        ws, hs = self.stored_size
        return (x0, y0), _stored_window((x0, y0, x1, y1), self.orientation, (ws // r, hs // r)), r

    def read_region(self, region, max_reduction=1.0):
        """Pixels covering ``region`` (x0, y0, x1, y1) original (EXIF-rotated) px, floats allowed.

        Args:
            region: the returned pixels cover it (grown to whole pixels of the reduced grid),
                clipped to the image.
            max_reduction (float): the caller can use pixels at 1/r resolution for any r up to
                this. TIFFs answer at the largest power of 2 <= it (from an overview when the file
                has one); images decoded once at the reduction they were opened with.

        Returns:
            :class:`ImageRegion`: pixels (h, w, 3) uint8 in the reader's format, origin, reduction, image_size.

        Raises:
            ImageReadError: corrupt data, or a region that misses the image.
        """
        (x0, y0), stored, r = self._window(region, max_reduction)
        pixels = np.ascontiguousarray(_ORIENT[self.orientation](self._read(stored, r)))
        return ImageRegion(pixels, (x0 * r, y0 * r), r, self.image_size)

    def read_valid_mask(self, region, max_reduction=1.0):
        """The valid-data mask over ``region``, on the same grid :meth:`read_region` would use.

        Returns:
            :class:`ImageRegion` whose ``pixels`` is (h, w) bool: True where the image has data
            (outside its nodata value / transparent alpha / internal mask). All True without a mask.
        """
        (x0, y0), stored, r = self._window(region, max_reduction)
        if not self.has_mask:
            valid = np.ones((stored[3] - stored[1], stored[2] - stored[0]), bool)
        else:
            valid = self._read(stored, r, mask=True)
        return ImageRegion(np.ascontiguousarray(_ORIENT[self.orientation](valid)), (x0 * r, y0 * r), r,
                           self.image_size)

    def valid_fraction(self, region, max_reduction=1.0):
        """Fraction (0..1) of valid pixels in ``region`` (see :meth:`read_valid_mask`); 1.0 without a mask."""
        if not self.has_mask:
            return 1.0
        return float(self.read_valid_mask(region, max_reduction).pixels.mean())

    def close(self):
        self._decoded = None
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_format(format):
    if format not in ("BGR", "RGB"):
        raise ValueError(f"format must be 'BGR' or 'RGB', got {format!r}")


def open_image(file_name, format="BGR", max_reduction=1.0, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, decode_once=True):
    """Open an image for reading by windows (see the module docstring for what is decoded when).

    Args:
        file_name (str): path. format (str): "BGR" or "RGB".
        max_reduction (float or callable): every window will be read at a resolution of
            1/``max_reduction`` or finer (e.g. 1 / the finest scale the caller will use); a callable
            gets the image's (height, width) (after EXIF rotation, from the header) and returns it.
            An image decoded once is decoded at the largest power of 2 <= it.
        max_image_pixels (int or None): ``SNIPER.INPUT.MAX_IMAGE_PIXELS``; a larger image raises.
        decode_once (bool): False: a stream format (JPEG, PNG, ...) is read by rows whatever its
            size (for a single read of the whole image, which needs no decoded copy to cut from).

    Returns:
        ImageReader (a context manager; ``close()`` frees the pixels and the file).

    Raises:
        ImageReadError: missing, truncated or corrupt file, unsupported sample type, too many pixels.
    """
    return ImageReader(file_name, format, max_reduction, max_image_pixels, decode_once)


def read_image_size(file_name, max_image_pixels=None):
    """(height, width) after EXIF rotation, from the header only (no pixel is decoded)."""
    ds = _open_dataset(file_name)
    with ds:
        w, h = ds.width, ds.height
        transposed = _header_orientation(file_name, ds.driver, ds.tags()) in _TRANSPOSING
    size = (w, h) if transposed else (h, w)
    check_pixel_limit(file_name, size, max_image_pixels)
    return size


def read_image(file_name, format="BGR", max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Read a whole image at full resolution, applying its EXIF orientation.

    Returns:
        np.ndarray: (H, W, 3) uint8 in ``format``; H, W after EXIF rotation.

    Raises:
        ImageReadError: missing, truncated, corrupt, unsupported, or too many pixels.
    """
    with open_image(file_name, format, 1.0, max_image_pixels, decode_once=False) as reader:  # one copy
        h, w = reader.image_size
        return reader.read_region((0, 0, w, h)).pixels


def read_image_region(file_name, region, format="BGR", max_reduction=1, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Read the pixels of one region of an image (:meth:`ImageReader.read_region` of a fresh reader)."""
    with open_image(file_name, format, max_reduction, max_image_pixels) as reader:
        return reader.read_region(region, max_reduction)


def _chip_region(chip, scale, out_size):
    """Source region (original px) a chip of ``out_size`` at ``scale`` resamples, with a margin."""
    margin = 2.0 / min(scale, 1.0)  # source pixels the resampling may touch around the chip
    x0, y0 = float(chip[0]), float(chip[1])
    return (x0 - margin, y0 - margin, x0 + out_size[1] / scale + margin, y0 + out_size[0] / scale + margin)


def read_chip(reader, chip, scale, chip_size):
    """The content of a chip (or test tile): ``chip`` (x0, y0, x1, y1) original px resized by exactly ``scale``.

    Reads only the source pixels the resampling touches (plus a margin), at the coarsest resolution
    the reader offers down to 1/scale, and resamples them with ``warp_to_chip``.

    Returns:
        (pixels (h, w, 3) uint8, (x0, y0) chip origin in original px): an original point ``x`` is at
        ``(x - x0) * scale`` in ``pixels``; h, w <= chip_size (the part of the chip inside the image).
    """
    from .geometry import chip_content_size, warp_to_chip

    out_size = chip_content_size(chip, scale, reader.image_size, chip_size)
    x0, y0 = float(chip[0]), float(chip[1])
    src = reader.read_region(_chip_region(chip, scale, out_size), max_reduction=1.0 / scale)
    r = src.reduction
    offset = ((x0 - src.origin[0]) / r, (y0 - src.origin[1]) / r)
    return warp_to_chip(src.pixels, offset, scale * r, out_size), (x0, y0)


def read_chip_valid_mask(reader, chip, scale, chip_size):
    """The valid-data mask of a chip, on the chip's pixel grid (see :func:`read_chip`).

    Returns:
        (h, w) bool (True: the chip pixel overlaps valid data), or None when the image has no mask.
    """
    if not reader.has_mask:
        return None
    from .geometry import chip_content_size, warp_to_chip

    out_size = chip_content_size(chip, scale, reader.image_size, chip_size)
    x0, y0 = float(chip[0]), float(chip[1])
    src = reader.read_valid_mask(_chip_region(chip, scale, out_size), max_reduction=1.0 / scale)
    r = src.reduction
    offset = ((x0 - src.origin[0]) / r, (y0 - src.origin[1]) / r)
    valid = warp_to_chip(src.pixels.astype(np.uint8)[..., None] * 255, offset, scale * r, out_size)
    return valid[..., 0] > 0
