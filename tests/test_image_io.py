"""Image reading: every file kind detectron2's read_image handles, strict errors, region reads."""

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from sniper_d2.image_io import ImageReadError, read_image, read_image_region, read_image_size


def _rgb(h=30, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h, w):
    """A smooth colour image (JPEG-friendly, so lossy round trips stay close)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([128 + 100 * np.sin(x / 17.0), 128 + 100 * np.cos(y / 13.0),
                     128 + 60 * np.sin((x + y) / 29.0)], axis=2).round().astype(np.uint8)


# EXIF orientation -> the displayed image as a function of the stored one (EXIF 2.3, Table 4).
_DISPLAY = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: np.rot90(a.transpose(1, 0, 2), k=2),
    8: lambda a: np.rot90(a, k=1),
}
# ... and its inverse: the stored image that displays as ``a``.
_STORE = {1: _DISPLAY[1], 2: _DISPLAY[2], 3: _DISPLAY[3], 4: _DISPLAY[4], 5: _DISPLAY[5],
          6: _DISPLAY[8], 7: _DISPLAY[7], 8: _DISPLAY[6]}


def _save_oriented(path, displayed, orientation, **kwargs):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(_STORE[orientation](displayed))).save(path, exif=exif.tobytes(), **kwargs)


# --- orientation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_pixels_and_size(tmp_path, orientation):
    displayed = _rgb(30, 50)
    path = str(tmp_path / f"o{orientation}.png")
    _save_oriented(path, displayed, orientation)
    assert read_image_size(path) == (30, 50)
    np.testing.assert_array_equal(read_image(path, format="RGB"), displayed)
    np.testing.assert_array_equal(read_image(path, format="BGR"), displayed[..., ::-1])


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_region_equals_the_same_cut_of_the_whole_image(tmp_path, orientation):
    displayed = _rgb(40, 70, seed=orientation)
    path = str(tmp_path / "r.png")
    _save_oriented(path, displayed, orientation)
    region = read_image_region(path, (10.5, 5.0, 33.2, 40.0), format="RGB")
    assert region.origin == (10, 5) and region.reduction == 1 and region.image_size == (40, 70)
    np.testing.assert_array_equal(region.pixels, displayed[5:40, 10:34])


def test_region_outside_the_image_raises_naming_the_file(tmp_path):
    path = str(tmp_path / "small.png")
    Image.fromarray(_rgb()).save(path)
    with pytest.raises(ImageReadError, match=r"small\.png: region .* outside the 50x30 image"):
        read_image_region(path, (60, 0, 80, 10))


def test_size_comes_from_the_header_without_decoding(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_rgb(200, 300)).save(path)
    path.write_bytes(path.read_bytes()[:2000])  # pixel data cut off, header intact
    assert read_image_size(str(path)) == (200, 300)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(str(path))


# --- pixel formats ----------------------------------------------------------------------------------

def test_gray_image_gives_three_equal_channels(tmp_path):
    gray = _rgb()[..., 0]
    path = str(tmp_path / "g.png")
    Image.fromarray(gray).save(path)
    np.testing.assert_array_equal(read_image(path), np.repeat(gray[..., None], 3, axis=2))


def test_palette_image_gives_its_colours(tmp_path):
    img = Image.fromarray(_rgb()).convert("P")
    path = str(tmp_path / "p.png")
    img.save(path)
    np.testing.assert_array_equal(read_image(path, format="RGB"), np.asarray(img.convert("RGB")))


def test_rgba_is_composited_on_black(tmp_path):
    rgb = _rgb()
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, 20:] = 255
    path = str(tmp_path / "a.png")
    Image.fromarray(np.dstack([rgb, alpha])).save(path)
    out = read_image(path, format="RGB")
    np.testing.assert_array_equal(out[:, 20:], rgb[:, 20:])  # opaque: colour kept
    assert (out[:, :20] == 0).all()  # transparent: black


def test_16bit_gray_png_keeps_the_top_byte_even_when_dark(tmp_path):
    values = (np.random.default_rng(1).integers(0, 65536, (30, 50))).astype(np.uint16)
    values[0, :5] = [0, 255, 256, 65280, 65535]
    path = str(tmp_path / "g16.png")
    Image.fromarray(values).save(path)
    out = read_image(path)
    np.testing.assert_array_equal(out[..., 0], values >> 8)
    assert out[0, :5, 0].tolist() == [0, 0, 1, 255, 255]
    dark = str(tmp_path / "dark16.png")
    Image.fromarray((values >> 8).astype(np.uint16)).save(dark)  # a dark 16-bit image stays dark
    assert read_image(dark).max() == 0


def test_16bit_tiff_and_16bit_rgb_png(tmp_path):
    values = np.random.default_rng(2).integers(0, 65536, (30, 50, 3)).astype(np.uint16)
    tif = str(tmp_path / "g16.tif")
    Image.fromarray(values[..., 0]).save(tif)
    np.testing.assert_array_equal(read_image(tif)[..., 1], values[..., 0] >> 8)
    png = str(tmp_path / "c16.png")
    cv2.imwrite(png, values)  # 16-bit BGR
    np.testing.assert_array_equal(read_image(png, format="BGR"), (values >> 8).astype(np.uint8))


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    path = str(tmp_path / "cmyk.jpg")
    Image.fromarray(_smooth(40, 60)).convert("CMYK").save(path, quality=95)
    out = read_image(path, format="RGB")
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - _smooth(40, 60)).mean() < 8


# --- errors -----------------------------------------------------------------------------------------

def test_missing_file_raises_naming_it(tmp_path):
    with pytest.raises(ImageReadError, match=r"nothere\.png: image file not found") as info:
        read_image(str(tmp_path / "nothere.png"))
    assert info.value.file_name.endswith("nothere.png")


@pytest.mark.parametrize("ext", ["jpg", "png"])
@pytest.mark.parametrize("load_truncated", [False, True])
def test_truncated_file_raises_even_if_pil_was_told_to_accept_it(tmp_path, monkeypatch, ext, load_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    path = tmp_path / f"cut.{ext}"
    Image.fromarray(_rgb(200, 200)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(ImageReadError, match=rf"cut\.{ext}: corrupt or truncated"):
        read_image(str(path))
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image_region(str(path), (0, 0, 10, 10))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is load_truncated, "the caller's setting is restored"


def test_garbage_file_raises(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match=r"notes\.jpg: not a readable image"):
        read_image_size(str(path))


def test_unknown_format_argument_is_refused(tmp_path):
    path = str(tmp_path / "x.png")
    Image.fromarray(_rgb()).save(path)
    with pytest.raises(ValueError, match="format"):
        read_image(path, format="YUV")


# --- reduced JPEG decoding --------------------------------------------------------------------------

def test_jpeg_region_at_reduced_resolution_matches_a_full_decode_shrunk(tmp_path):
    image = _smooth(240, 320)
    path = str(tmp_path / "big.jpg")
    Image.fromarray(image).save(path, quality=95)
    full = read_image(path, format="RGB")
    region = read_image_region(path, (50, 30, 250, 230), format="RGB", max_reduction=4.0)
    assert region.reduction == 4 and region.origin == (48, 28) and region.image_size == (240, 320)
    x0, y0 = region.origin
    h, w = region.pixels.shape[:2]
    expected = cv2.resize(full[y0:y0 + 4 * h, x0:x0 + 4 * w], (w, h), interpolation=cv2.INTER_AREA)
    assert np.abs(region.pixels.astype(int) - expected).mean() < 2.0
    assert read_image_region(path, (0, 0, 10, 10), max_reduction=3.9).reduction == 2  # powers of 2 only


def test_reduced_decoding_only_where_the_grid_stays_aligned(tmp_path):
    odd = _smooth(63, 81)
    path = str(tmp_path / "odd_rotated.jpg")
    _save_oriented(path, odd, 6, quality=95)
    region = read_image_region(path, (0, 0, 81, 63), max_reduction=2.0)
    assert region.reduction == 1 and region.image_size == (63, 81)  # rotated odd sides: full decode
    png = str(tmp_path / "x.png")
    Image.fromarray(odd).save(png)  # not rotated: the partial blocks at the right and bottom are left out
    region = read_image_region(png, (0, 0, 81, 63), format="RGB", max_reduction=8.0)
    assert region.reduction == 8 and region.pixels.shape == (7, 10, 3)
    blocks = odd[:56, :80].reshape(7, 8, 10, 8, 3).mean(axis=(1, 3))
    assert np.abs(region.pixels - blocks).max() <= 1  # rows averaged as they are decoded
    even = str(tmp_path / "even_rotated.jpg")
    _save_oriented(even, _smooth(64, 80), 6, quality=95)
    region = read_image_region(even, (0, 0, 80, 64), format="RGB", max_reduction=2.0)
    assert region.reduction == 2 and region.pixels.shape == (32, 40, 3)
    expected = cv2.resize(read_image(even, format="RGB"), (40, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(region.pixels.astype(int) - expected).mean() < 2.0
