"""Reading images robustly: EXIF rotation, gray/RGBA/palette/16-bit, and errors that name the file.

Like detectron2's ``read_image`` but stricter: a truncated or corrupt file raises
:class:`ImageReadError` (PIL's ``LOAD_TRUNCATED_IMAGES`` is forced off while decoding, and decoding
is forced), never a half-grey picture. :func:`read_image_size` reads only the header.
:func:`read_image_region` decodes what a chip needs: for a JPEG read at a reduced resolution it
lets libjpeg decode at 1/2, 1/4 or 1/8 size (``Image.draft``), and it holds one decoded copy of
the image at most.

Reading by windows: :func:`open_image` returns an :class:`ImageReader` that serves windows of an
image (:meth:`ImageReader.read_region`): tiled or striped TIFF / BigTIFF through ``tifffile``,
decoding only the segments a window touches (block-averaged at once when a reduced resolution is
asked for); every other format decoded once by PIL (JPEG at a libjpeg draft reduction when the
caller allows it). Colour conversion and EXIF orientation are applied per window, never to a second
copy of the whole image. :func:`read_chip` cuts a training chip or a test tile through a reader;
training chips (:func:`read_image_region`), test tiles and the proposal dump all read this way.

Frames: every coordinate here is in pixels of the image *after* EXIF rotation (what the data set's
``height``/``width`` describe); pixel ``(row i, col j)`` covers the area ``[j, j+1) x [i, i+1)``.
"""

import contextlib
import math
import os
from typing import NamedTuple, Tuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "ImageRegion", "ImageReader", "open_image", "read_chip", "read_image",
           "read_image_region", "read_image_size"]

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
            JPEGs are then decoded at 1/2, 1/4 or 1/8 size (the largest such r), tiled TIFFs
            block-averaged per tile. Pass 1 for full resolution.

    Returns:
        ImageRegion: pixels (h, w, 3) uint8, origin, reduction, image_size (see :class:`ImageRegion`).

    Raises:
        ImageReadError: missing/corrupt/truncated file, or a region that misses the image.
    """
    with open_image(file_name, format, max_reduction) as reader:
        return reader.read_region(region, max_reduction)


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


class _PilPixels:
    """The whole image decoded once by PIL (at a libjpeg draft reduction for JPEGs), in stored order."""

    def __init__(self, img, file_name, max_reduction):
        self.file_name = file_name
        self.orientation = _orientation(img)
        self.reduction = _draft(img, self.orientation, max_reduction)
        self.raw_bits = _raw_bits(img)  # from the tile descriptor, which decoding clears
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated data raises, whatever the caller's setting
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            img.close()
            raise ImageReadError(file_name, f"corrupt or truncated image data ({e})") from e
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        self.img = img
        self.stored_size = img.size
        # 32-bit integer images of unknown depth keep the top byte of the whole image's peak, in every window.
        self.shift = None
        if img.mode == "I" and self.raw_bits != 16:
            peak = int(img.getextrema()[1])
            self.shift = max(0, peak.bit_length() - 8)

    def window(self, window, reduction):
        """Stored-frame window (x0, y0, x1, y1) of the decoded pixels (at ``self.reduction``, which
        ``reduction`` equals): (h, w, 3) uint8 RGB."""
        crop = self.img.crop(window)
        if self.shift is not None:
            gray = np.clip(np.asarray(crop).astype(np.int64) >> self.shift, 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        return _to_uint8_rgb(crop, self.file_name, self.raw_bits)

    def close(self):
        if self.img is not None:
            self.img.close()
            self.img = None


class _TiffPixels:
    """A tiled or striped (Big)TIFF read segment by segment with tifffile: only the segments a window
    touches are decoded, each one reduced by block averaging right after decoding when asked."""

    def __init__(self, tif, file_name):
        page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
        self.tif, self.page, self.file_name = tif, page, file_name
        samples = page.samplesperpixel
        if page.dtype not in (np.uint8, np.uint16) or samples not in (1, 3, 4) or page.photometric not in (1, 2) \
                or (samples > 1 and page.planarconfig != 1) or page.imagedepth != 1 or page.is_subsampled:
            raise NotImplementedError("layout not read by windows")
        tag = page.tags.get(274)
        self.orientation = int(tag.value) if tag is not None and int(tag.value) in _ORIENT else 1
        self.stored_size = (page.imagewidth, page.imagelength)
        if page.is_tiled:
            self.seg_h, self.seg_w = page.tilelength, page.tilewidth
        else:
            self.seg_h, self.seg_w = page.rowsperstrip or page.imagelength, page.imagewidth
        self.seg_h = min(self.seg_h, page.imagelength)
        self.per_row = -(-page.imagewidth // self.seg_w)
        self.decode_args = {"_fullsize": page.is_tiled}
        if page.compression in (6, 7, 34892, 33007):
            self.decode_args.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)
        self.samples = samples
        self.reduction = 1

    def _segment(self, index):
        """(rows, cols, samples) array of one decoded segment (zeros for an empty one)."""
        page = self.page
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        fh = self.tif.filehandle
        with fh.lock:
            fh.seek(offset)
            data = fh.read(count) if count else None
        if data is not None and len(data) < count:
            raise ImageReadError(self.file_name, f"truncated TIFF data (segment {index})")
        try:
            segment, _, shape = page.decode(data, index, **self.decode_args)
        except (ValueError, NotImplementedError, RuntimeError) as e:
            raise ImageReadError(self.file_name, f"corrupt TIFF data or unsupported compression ({e})") from e
        if segment is None:
            return np.zeros((shape[1], shape[2], self.samples), page.dtype)
        return segment.reshape(segment.shape[-3], segment.shape[-2], -1)

    def window(self, window, reduction):
        """Stored-frame window at ``reduction`` (an integer dividing the segment sides, or 1): RGB uint8."""
        x0, y0, x1, y1 = window  # in reduced stored pixels
        r = reduction
        out = np.zeros((y1 - y0, x1 - x0, self.samples), self.page.dtype)
        W, H = self.stored_size
        for row in range((y0 * r) // self.seg_h, min(-(-(y1 * r) // self.seg_h), -(-H // self.seg_h))):
            for col in range((x0 * r) // self.seg_w, min(-(-(x1 * r) // self.seg_w), self.per_row)):
                seg = self._segment(row * self.per_row + col)
                sy, sx = row * self.seg_h, col * self.seg_w
                seg = seg[:max(0, min(self.seg_h, H - sy)), :max(0, min(self.seg_w, W - sx))]
                if r > 1:
                    seg = _block_mean(seg, r)
                    sy, sx = sy // r, sx // r
                # Paste the overlap of the segment and the window.
                ty0, tx0 = max(y0, sy), max(x0, sx)
                ty1, tx1 = min(y1, sy + seg.shape[0]), min(x1, sx + seg.shape[1])
                if ty1 > ty0 and tx1 > tx0:
                    out[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = seg[ty0 - sy:ty1 - sy, tx0 - sx:tx1 - sx]
        return self._to_rgb(out)

    def _to_rgb(self, arr):
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        if self.samples == 1:
            return np.repeat(arr, 3, axis=2)
        if self.samples == 4:  # composited on black, as for PIL images
            return _to_uint8_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"), self.file_name, None)
        return arr

    def best_reduction(self, max_reduction):
        """Largest power of 2 <= max_reduction (<= 32) dividing both segment sides (or 1)."""
        r = 1
        while r * 2 <= max_reduction and r < 32 and self.seg_h % (r * 2) == 0 and self.seg_w % (r * 2) == 0:
            r *= 2
        return r

    def close(self):
        self.tif.close()


def _block_mean(arr, r):
    """(h, w, C) -> (ceil(h/r), ceil(w/r), C) means of r x r blocks (partial blocks at the edges), rounded."""
    h, w, c = arr.shape
    hp, wp = -(-h // r) * r, -(-w // r) * r
    if (hp, wp) != (h, w):
        arr = np.pad(arr, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    blocks = arr.reshape(hp // r, r, wp // r, r, c).astype(np.uint32).sum(axis=(1, 3))
    return ((blocks + (r * r) // 2) // (r * r)).astype(arr.dtype)


class ImageReader:
    """An open image serving windows of its pixels (see :func:`open_image`).

    Attributes:
        image_size: (height, width) after EXIF rotation, original pixels.
        file_name (str).
    """

    def __init__(self, file_name, pixels, format, image_size):
        self.file_name, self._pixels, self.format, self.image_size = file_name, pixels, format, image_size

    def read_region(self, region, max_reduction=1.0):
        """Pixels covering ``region`` (x0, y0, x1, y1) original (EXIF-rotated) px, floats allowed.

        Returns :class:`ImageRegion` (pixels (h, w, 3) uint8 in the reader's format, origin,
        reduction, image_size). Decode-once formats answer at the reduction they were opened with;
        windowed TIFFs at the largest power of 2 <= ``max_reduction`` their segments allow.
        """
        px = self._pixels
        r = px.reduction if isinstance(px, _PilPixels) else px.best_reduction(max_reduction)
        height, width = self.image_size
        disp_w, disp_h = (-(-width // r), -(-height // r))
        x0 = max(0, int(math.floor(region[0] / r)))
        y0 = max(0, int(math.floor(region[1] / r)))
        x1 = min(disp_w, int(math.ceil(region[2] / r)))
        y1 = min(disp_h, int(math.ceil(region[3] / r)))
        if x1 <= x0 or y1 <= y0:
            raise ImageReadError(self.file_name, f"region {[float(v) for v in region]} lies outside the "
                                 f"{width}x{height} image")
        stored_w, stored_h = px.stored_size
        reduced_stored = (-(-stored_w // r), -(-stored_h // r)) if isinstance(px, _TiffPixels) else (stored_w, stored_h)
        window = _stored_window((x0, y0, x1, y1), px.orientation, reduced_stored)
        rgb = _ORIENT[px.orientation](px.window(window, r))
        return ImageRegion(_in_format(np.ascontiguousarray(rgb), self.format), (x0 * r, y0 * r), r, self.image_size)

    def close(self):
        if self._pixels is not None:
            self._pixels.close()
            self._pixels = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _open_tiff(file_name):
    """A windowed TIFF source, or None when tifffile cannot read this file by windows."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover  (a dependency; PIL then decodes the whole image)
        return None
    try:
        tif = tifffile.TiffFile(file_name)
    except Exception:  # not a TIFF tifffile reads: PIL tries
        return None
    try:
        return _TiffPixels(tif, file_name)
    except Exception:
        tif.close()
        return None


def open_image(file_name, format="BGR", max_reduction=1.0):
    """Open an image for reading by windows.

    Tiled or striped TIFF / BigTIFF (8 or 16 bit, gray / RGB / RGBA, contiguous samples): nothing is
    decoded until a window is read, and then only the segments it touches. Everything else (JPEG,
    PNG, other TIFFs, ...): decoded once by PIL, at 1/2, 1/4 or 1/8 size for a JPEG when
    ``max_reduction`` allows it; windows are then cut from that one copy. Colour conversion and
    EXIF orientation are applied per window, never to a copy of the whole image.

    Args:
        file_name (str): path. format (str): "BGR" or "RGB".
        max_reduction (float or callable): every window will be read at a resolution of
            1/``max_reduction`` or finer (e.g. 1 / the finest scale the caller will use); a callable
            gets the image's (height, width) (after EXIF rotation, from the header) and returns it.

    Returns:
        ImageReader (a context manager; ``close()`` frees the pixels).

    Raises:
        ImageReadError: missing, truncated or corrupt file, unsupported mode.
    """
    _check_format(format)
    lower = file_name.lower()
    if lower.endswith((".tif", ".tiff")):
        tiff = _open_tiff(file_name)
        if tiff is not None:
            w, h = tiff.stored_size
            size = (w, h) if tiff.orientation in _TRANSPOSING else (h, w)
            return ImageReader(file_name, tiff, format, size)
    img = _open_pil(file_name)
    w, h = img.size  # before any draft reduction
    size = (w, h) if _orientation(img) in _TRANSPOSING else (h, w)
    if callable(max_reduction):
        max_reduction = max_reduction(size)
    pixels = _PilPixels(img, file_name, max_reduction)  # decodes; PIL then closes the file
    return ImageReader(file_name, pixels, format, size)


def _open_pil(file_name):
    """``Image.open`` with errors naming the file (the image stays usable after decoding)."""
    if not os.path.isfile(file_name):
        raise ImageReadError(file_name, "image file not found")
    try:
        return Image.open(file_name)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageReadError(file_name, f"not a readable image ({e})") from e


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
    margin = 2.0 / min(scale, 1.0)  # source pixels the resampling may touch around the chip
    x0, y0 = float(chip[0]), float(chip[1])
    region = (x0 - margin, y0 - margin, x0 + out_size[1] / scale + margin, y0 + out_size[0] / scale + margin)
    src = reader.read_region(region, max_reduction=1.0 / scale)
    r = src.reduction
    offset = ((x0 - src.origin[0]) / r, (y0 - src.origin[1]) / r)
    return warp_to_chip(src.pixels, offset, scale * r, out_size), (x0, y0)
