"""Reading images by windows: every window equals the same window of a full decode (TIFF tiled,
striped, BigTIFF, 16-bit, RGBA, compressed; EXIF orientations; JPEG draft reduction)."""

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings, strategies as st
from PIL import Image

from sniper_d2.image_io import ImageReadError, open_image, read_image

H, W = 150, 230


def _rgb(seed=0, h=H, w=W):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiffs")
    rgb = _rgb(1)
    gray16 = np.random.default_rng(2).integers(0, 65536, (H, W), dtype=np.uint16)
    rgba = np.concatenate([_rgb(3), np.random.default_rng(4).integers(0, 256, (H, W, 1), dtype=np.uint8)], axis=2)
    files = {
        "tiled": (rgb, dict(tile=(64, 48))),
        "striped": (rgb, dict(rowsperstrip=7)),
        "bigtiff_zlib": (rgb, dict(tile=(32, 32), bigtiff=True, compression="zlib")),
        "gray16": (gray16, dict(tile=(48, 64))),
        "rgba": (rgba, dict(tile=(64, 64), extrasamples=["unassalpha"])),
    }
    out = {}
    for name, (data, kw) in files.items():
        path = str(d / f"{name}.tif")
        tifffile.imwrite(path, data, photometric="rgb" if data.ndim == 3 else "minisblack", **kw)
        out[name] = (path, data)
    return out


def _expected_rgb(data):
    """What a full decode gives, as RGB uint8 (16-bit: top byte; RGBA: composited on black)."""
    if data.dtype == np.uint16:
        data = (data >> 8).astype(np.uint8)
    if data.ndim == 2:
        return np.repeat(data[..., None], 3, axis=2)
    if data.shape[2] == 4:
        black = Image.new("RGBA", (data.shape[1], data.shape[0]), (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, Image.fromarray(data, "RGBA")).convert("RGB"))
    return data


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["tiled", "striped", "bigtiff_zlib", "gray16", "rgba"]),
       x0=st.integers(0, W - 1), y0=st.integers(0, H - 1), w=st.integers(1, W), h=st.integers(1, H))
def test_a_tiff_window_equals_the_same_window_of_a_full_decode(tiffs, name, x0, y0, w, h):
    path, data = tiffs[name]
    full = _expected_rgb(data)
    with open_image(path, format="RGB") as reader:
        assert reader.image_size == (H, W)
        region = reader.read_region((x0, y0, x0 + w, y0 + h))
    x1, y1 = min(W, x0 + w), min(H, y0 + h)
    assert region.origin == (x0, y0) and region.reduction == 1
    np.testing.assert_array_equal(region.pixels, full[y0:y1, x0:x1])


def test_a_tiff_pil_can_read_gives_the_pixels_pil_gives(tiffs):
    path, _ = tiffs["tiled"]
    with open_image(path, format="BGR") as reader:
        np.testing.assert_array_equal(reader.read_region((0, 0, W, H)).pixels, read_image(path, format="BGR"))


def test_a_reduced_tiff_window_is_the_block_mean_of_the_full_image(tiffs):
    path, data = tiffs["tiled"]  # tiles 64 x 48: reductions up to 16 keep the segment grid
    with open_image(path, format="RGB") as reader:
        region = reader.read_region((0, 0, W, H), max_reduction=5)
    assert region.reduction == 4
    r = 4
    pad = np.pad(data, ((0, -H % r), (0, -W % r), (0, 0)), mode="edge").astype(np.uint32)
    blocks = pad.reshape(pad.shape[0] // r, r, pad.shape[1] // r, r, 3).sum(axis=(1, 3))
    np.testing.assert_array_equal(region.pixels, ((blocks + 8) // 16).astype(np.uint8))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["jpeg", "tiff"])
def test_exif_orientation_is_applied_per_window(tmp_path, orientation, kind):
    stored = _rgb(5, 40, 64)
    if kind == "jpeg":
        path = str(tmp_path / "o.jpg")
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(path, quality=95, exif=exif)
        full = read_image(path, format="RGB")  # PIL: decode, then exif_transpose of the whole image
    else:
        path = str(tmp_path / "o.tif")
        tifffile.imwrite(path, stored, photometric="rgb", tile=(16, 16), extratags=[(274, 3, 1, orientation, True)])
        full = np.asarray(_pil_transpose(Image.fromarray(stored), orientation))
    with open_image(path, format="RGB") as reader:
        assert reader.image_size == full.shape[:2]
        hd, wd = full.shape[:2]
        for window in [(0, 0, wd, hd), (3, 5, 17, 30), (wd - 7, hd - 9, wd, hd)]:
            region = reader.read_region(window)
            np.testing.assert_array_equal(region.pixels, full[window[1]:window[3], window[0]:window[2]],
                                          err_msg=f"orientation {orientation}, window {window}")


def _pil_transpose(img, orientation):
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def test_a_jpeg_read_with_a_draft_reduction_is_decoded_once_at_that_size(tmp_path):
    path = str(tmp_path / "big.jpg")
    Image.fromarray(_rgb(6, 160, 240)).save(path, quality=90)
    with open_image(path, format="RGB", max_reduction=4) as reader:
        assert reader.image_size == (160, 240)
        region = reader.read_region((40, 20, 200, 100))
    assert region.reduction == 4 and region.origin == (40, 20) and region.pixels.shape == (20, 40, 3)


def test_a_truncated_tiff_names_the_file(tmp_path):
    path = str(tmp_path / "cut.tif")
    tifffile.imwrite(path, _rgb(7), photometric="rgb", tile=(32, 32))
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.tif"):
        with open_image(path) as reader:
            reader.read_region((0, 0, W, H))
