"""Reading images by windows through rasterio: every window equals the same window of a full decode
(GeoTIFF tiled and striped x every compression GDAL writes, 8/16 bit, 1/3/4 bands), reduced reads
come from the overviews, EXIF orientations, masks (nodata, alpha), huge JPEGs, the pixel limit."""

import os

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings, strategies as st
from PIL import Image
from rasterio.enums import Resampling

from sniper_d2.image_io import ImageReadError, check_image_size, open_image, read_chip_valid_mask, read_image

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

H, W = 150, 230
CODECS = ["JPEG", "LZW", "DEFLATE", "ZSTD", "WEBP"]


def _smooth(h=H, w=W, bands=3, seed=0):
    """A smooth (JPEG/WebP-friendly) picture, (bands, h, w) uint8."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([128 + 100 * np.sin(x / (11.0 + 3 * b + seed) + b) * np.cos(y / (9.0 + b))
                     for b in range(bands)]).round().astype(np.uint8)


def _write(path, data, **profile):
    """Write (bands, h, w) ``data`` as a GeoTIFF with rasterio (GDAL)."""
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype, **profile) as ds:
        ds.write(data)


def _expected(data, alpha=False):
    """(h, w, 3) uint8 RGB of a full decode of (bands, h, w) ``data`` (16 bit: top byte; alpha on black)."""
    if data.dtype == np.uint16:
        data = (data >> 8).astype(np.uint8)
    rgb = data[:3].transpose(1, 2, 0) if data.shape[0] >= 3 else np.repeat(data[:1].transpose(1, 2, 0), 3, axis=2)
    if alpha:
        rgb = ((rgb.astype(np.uint16) * data[-1][..., None] + 127) // 255).astype(np.uint8)
    return rgb


def _full_decode(path):
    """Every band of the whole file as GDAL decodes it, (bands, h, w)."""
    with rasterio.open(path) as ds:
        return ds.read()


# --- windowed reads equal a full decode ---------------------------------------------------------------

@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    """{(layout, codec): path} GeoTIFFs of one smooth RGB picture."""
    d = tmp_path_factory.mktemp("rasters")
    data = _smooth()
    out = {}
    for codec in CODECS:
        for layout in ("tiled", "striped"):
            path = str(d / f"{layout}_{codec}.tif")
            kw = dict(tiled=True, blockxsize=64, blockysize=48) if layout == "tiled" else dict(blockysize=16)
            if codec == "JPEG":
                kw.update(photometric="YCBCR")
            _write(path, data, compress=codec, **kw)
            out[(layout, codec)] = path
    return out


@settings(max_examples=30, deadline=None)
@given(layout=st.sampled_from(["tiled", "striped"]), codec=st.sampled_from(CODECS),
       x0=st.integers(0, W - 1), y0=st.integers(0, H - 1), w=st.integers(1, W), h=st.integers(1, H))
def test_a_window_equals_the_same_window_of_a_full_decode(rasters, layout, codec, x0, y0, w, h):
    path = rasters[(layout, codec)]
    full = _expected(_full_decode(path))
    with open_image(path, format="RGB") as reader:
        assert reader.image_size == (H, W) and not reader.decoded_once and not reader.has_mask
        region = reader.read_region((x0, y0, x0 + w, y0 + h))
    x1, y1 = min(W, x0 + w), min(H, y0 + h)
    assert region.origin == (x0, y0) and region.reduction == 1
    np.testing.assert_array_equal(region.pixels, full[y0:y1, x0:x1])


@pytest.mark.parametrize("codec", CODECS)
def test_every_compression_is_written_and_read_as_such(rasters, codec):
    with rasterio.open(rasters[("tiled", codec)]) as ds:
        assert ds.compression.name.upper() == codec and ds.block_shapes[0] == (48, 64)
    full = read_image(rasters[("tiled", codec)], format="RGB")
    lossy = codec in ("JPEG", "WEBP")
    assert np.abs(full.astype(int) - _expected(_smooth())).mean() < (3 if lossy else 1e-9)


@pytest.mark.parametrize("bands,dtype,alpha", [(1, np.uint8, False), (1, np.uint16, False), (3, np.uint16, False),
                                               (4, np.uint8, True), (4, np.uint16, True)])
def test_bands_and_depths_windowed(tmp_path, bands, dtype, alpha):
    data = _smooth(bands=bands).astype(dtype)
    if dtype == np.uint16:
        data = data * np.uint16(257) + np.uint16(3)
    if alpha:
        data[-1] = np.where(np.arange(W)[None, :] < 100, 0, np.iinfo(dtype).max).astype(dtype)
    path = str(tmp_path / "b.tif")
    _write(path, data, compress="DEFLATE", tiled=True, blockxsize=32, blockysize=32,
           **(dict(photometric="RGB", alpha="YES") if alpha else {}))
    full = _expected(data, alpha=False)
    if alpha:  # alpha 0 / max: transparent pixels black, opaque ones unchanged
        full = np.where(data[-1][..., None] > 0, full, 0).astype(np.uint8)
    with open_image(path, format="BGR") as reader:
        assert reader.has_mask == alpha
        np.testing.assert_array_equal(reader.read_region((17, 9, 140, 111)).pixels, full[9:111, 17:140, ::-1])
        if alpha:
            valid = reader.read_valid_mask((90, 0, 110, 10)).pixels
            assert valid.shape == (10, 20) and not valid[:, :10].any() and valid[:, 10:].all()
            assert reader.valid_fraction((0, 0, 100, H)) == 0.0 and reader.valid_fraction((0, 0, 200, H)) == 0.5


def test_reduced_reads_come_from_the_overview(tmp_path):
    path = str(tmp_path / "ov.tif")
    data = np.random.default_rng(0).integers(0, 256, (3, 256, 320), dtype=np.uint8)  # noise: each method differs
    _write(path, data, compress="LZW", tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.nearest)
    with rasterio.open(path, overview_level=1) as ds:  # the factor-4 overview
        overview4 = ds.read()
    with open_image(path, format="RGB") as reader:
        region = reader.read_region((64, 32, 192, 160), max_reduction=5.0)
        assert region.reduction == 4 and region.origin == (64, 32)
        np.testing.assert_array_equal(region.pixels, overview4[:, 8:40, 16:48].transpose(1, 2, 0))
        full = reader.read_region((0, 0, 320, 256)).pixels
    block_mean = full.reshape(64, 4, 80, 4, 3).mean(axis=(1, 3))
    assert np.abs(overview4.transpose(1, 2, 0) - block_mean).mean() > 20  # not what averaging full res gives


def test_a_reduced_read_without_overviews_is_the_block_mean(tmp_path):
    path = str(tmp_path / "no_ov.tif")
    data = np.random.default_rng(1).integers(0, 256, (3, 150, 230), dtype=np.uint8)
    _write(path, data, compress="DEFLATE", tiled=True, blockxsize=32, blockysize=32)
    with open_image(path, format="RGB") as reader:
        region = reader.read_region((0, 0, W, H), max_reduction=4)
    assert region.reduction == 4 and region.pixels.shape == (37, 57, 3)  # partial blocks left out
    blocks = data[:, :148, :228].reshape(3, 37, 4, 57, 4).mean(axis=(2, 4)).transpose(1, 2, 0)
    assert np.abs(region.pixels - blocks).max() <= 1


# --- orientation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["jpeg", "tiff"])
def test_exif_orientation_is_applied_per_window(tmp_path, orientation, kind):
    stored = _smooth(40, 64).transpose(1, 2, 0).copy()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = str(tmp_path / ("o.jpg" if kind == "jpeg" else "o.tif"))
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 95} if kind == "jpeg" else {}))
    with Image.open(path) as img:
        from PIL import ImageOps

        full = np.asarray(ImageOps.exif_transpose(img.convert("RGB")))  # Pillow: decode, then transpose
    if kind == "jpeg":  # lossy: compare against GDAL's decode of the stored pixels, transposed the same way
        stored = _full_decode(path).transpose(1, 2, 0)
        exif_img = Image.fromarray(stored)
        exif_img.info["exif"] = exif.tobytes()
        full = np.asarray(ImageOps.exif_transpose(exif_img))
    with open_image(path, format="RGB") as reader:
        assert reader.image_size == full.shape[:2]
        hd, wd = full.shape[:2]
        for window in [(0, 0, wd, hd), (3, 5, 17, 30), (wd - 7, hd - 9, wd, hd)]:
            region = reader.read_region(window)
            np.testing.assert_array_equal(region.pixels, full[window[1]:window[3], window[0]:window[2]],
                                          err_msg=f"orientation {orientation}, window {window}")


def test_a_jpeg_is_decoded_once_at_the_reduced_size(tmp_path):
    path = str(tmp_path / "big.jpg")
    Image.fromarray(_smooth(160, 240).transpose(1, 2, 0)).save(path, quality=90)
    with open_image(path, format="RGB", max_reduction=4) as reader:
        assert reader.image_size == (160, 240) and reader.decoded_once
        region = reader.read_region((40, 20, 200, 100))
    assert region.reduction == 4 and region.origin == (40, 20) and region.pixels.shape == (20, 40, 3)


# --- large images -------------------------------------------------------------------------------------

def test_a_jpeg_above_pillows_limit_is_read_by_rows(tmp_path):
    """A 14000 x 13000 (182 MP) gray JPEG: Pillow refuses it; we read it, windowed, without decoding it whole."""
    import cv2

    side_w, side_h = 14000, 13000
    assert side_w * side_h > 2 * Image.MAX_IMAGE_PIXELS  # Pillow would raise DecompressionBombError
    gray = np.zeros((side_h, side_w), np.uint8)
    gray[::1000] = 255  # a line every 1000 rows, to check positions
    path = str(tmp_path / "huge.jpg")
    assert cv2.imwrite(path, gray, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del gray
    with open_image(path, format="RGB") as reader:
        assert reader.image_size == (side_h, side_w) and not reader.decoded_once
        region = reader.read_region((5000, 2990, 5100, 3010))
        assert region.pixels.shape == (20, 100, 3)
        assert region.pixels[10].min() > 200 and region.pixels[0].max() < 50  # row 3000 is white
    with open_image(path, format="RGB", max_reduction=8) as reader:  # libjpeg's 1/8 decoding, decoded once
        assert reader.decoded_once and reader.read_region((0, 0, side_w, side_h)).pixels.shape == (1625, 1750, 3)


def test_the_pixel_limit_names_its_key(tmp_path):
    path = str(tmp_path / "x.tif")
    _write(path, _smooth(), compress="LZW")
    with pytest.raises(ImageReadError, match=r"x\.tif: image is 230x150 = 34500 pixels, more than "
                                             r"SNIPER\.INPUT\.MAX_IMAGE_PIXELS \(1000\)"):
        open_image(path, max_image_pixels=1000)
    with open_image(path, max_image_pixels=34500) as reader:
        assert reader.image_size == (H, W)


def test_one_size_check(tmp_path):
    check_image_size("a.png", (10, 20), None)
    check_image_size("a.png", (10, 20), (10, 20))
    with pytest.raises(ImageReadError, match=r"a\.png: image is 20x10 \(WxH, after EXIF rotation\) but the data "
                                             r"set says 30x10"):
        check_image_size("a.png", (10, 20), (10, 30))


# --- masks -------------------------------------------------------------------------------------------

def test_nodata_value_gives_the_mask_and_chip_masks(tmp_path):
    path = str(tmp_path / "nd.tif")
    data = _smooth()
    data[:, :, 50:] = np.maximum(data[:, :, 50:], 1)  # 0 only where there is no data
    data[:, :, :50] = 0
    _write(path, data, compress="DEFLATE", tiled=True, blockxsize=32, blockysize=32, nodata=0)
    with open_image(path, format="RGB") as reader:
        assert reader.has_mask
        assert reader.valid_fraction((0, 0, 50, H)) == 0.0 and reader.valid_fraction((50, 0, W, H)) == 1.0
        chip = read_chip_valid_mask(reader, (0, 0, 100, 100), 0.5, 64)  # 50 x 50 chip px, data from x = 25
        assert chip.shape == (50, 50) and not chip[:, :24].any() and chip[:, 26:].all()


def test_a_truncated_tiff_names_the_file(tmp_path):
    path = str(tmp_path / "cut.tif")
    _write(path, np.random.default_rng(7).integers(0, 256, (3, H, W), dtype=np.uint8), compress="DEFLATE",
           tiled=True, blockxsize=32, blockysize=32)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.tif"):
        with open_image(path) as reader:
            reader.read_region((0, 0, W, H))
    os.remove(path)
