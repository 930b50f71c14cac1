"""Nodata: tiles wholly in a raster's nodata are not run (nor counted in the pixels report), and
detections centred on nodata are dropped; the same through the predictor and the tile pipeline."""

import os
import sys
from dataclasses import replace

import numpy as np
import pytest
import rasterio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_tiling import BlobModel, ONE_SCALE, painted  # noqa: E402

from sniper_d2.image_io import open_image  # noqa: E402
from sniper_d2.inference import MultiScaleTiledPredictor  # noqa: E402
from sniper_d2.inference.pipeline import ImageTask, build_tile_loader, run_tiled_inference  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

H, W = 256, 512
NODATA_X = 200  # columns x < 200 hold no data
IN_NODATA = [20, 20, 50, 50]  # its tiles lie wholly in nodata: never run
CENTRED_IN_NODATA = [150, 100, 190, 130]  # run (its tile has data), but centred on nodata: dropped
STRADDLING = [185, 150, 225, 180]  # centre x = 205: kept
IN_DATA = [300, 100, 340, 140]


def _write(path, how):
    """A 256 x 512 RGB GeoTIFF, white rectangles on black, columns x < 200 marked as no data by
    an internal mask ("mask") or an alpha band ("alpha"); the pixels there are left as painted."""
    bgr = painted(H, W, np.array([IN_NODATA, CENTRED_IN_NODATA, STRADDLING, IN_DATA]))
    valid = np.zeros((H, W), np.uint8)
    valid[:, NODATA_X:] = 255
    data = bgr[..., ::-1].transpose(2, 0, 1)
    count = 4 if how == "alpha" else 3
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=count, dtype="uint8", tiled=True,
                       blockxsize=64, blockysize=64, compress="DEFLATE",
                       **(dict(photometric="RGB", alpha="YES") if how == "alpha" else {})) as ds:
        ds.write(data, indexes=[1, 2, 3])
        if how == "alpha":
            ds.write(valid, 4)
        else:
            ds.write_mask(valid)


@pytest.fixture(scope="module", params=["mask", "alpha"])
def raster(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nodata") / f"{request.param}.tif")
    _write(path, request.param)
    return path


def _sorted(boxes):
    boxes = np.asarray(boxes).reshape(-1, 4)
    return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


def test_the_reader_sees_the_mask(raster):
    with open_image(raster) as reader:
        assert reader.has_mask
        assert reader.valid_fraction((0, 0, NODATA_X, H)) == 0.0
        assert reader.valid_fraction((NODATA_X - 10, 0, NODATA_X + 10, H)) == 0.5


def test_tiles_in_nodata_are_skipped_and_detections_centred_there_dropped(raster):
    model = BlobModel()
    predictor = MultiScaleTiledPredictor(model, ONE_SCALE)  # 128 px tiles every 64 px: 7 x 3 windows
    with open_image(raster) as reader:
        det = predictor(reader)
    straddling = list(STRADDLING)
    if raster.endswith("alpha.tif"):  # transparent pixels are composited on black: the box starts at the mask edge
        straddling[0] = NODATA_X
    np.testing.assert_allclose(_sorted(det["boxes"].numpy()), _sorted([straddling, IN_DATA]), atol=1.0)
    run = sum(len(call) for call in model.calls)
    assert run == 21 - 2 * 3  # the windows x in [0, 128) and [64, 192) lie wholly in nodata
    assert det["pixels"].tolist() == [run * 128 * 128]
    everything = MultiScaleTiledPredictor(BlobModel(), ONE_SCALE)(painted(H, W, np.array(
        [IN_NODATA, CENTRED_IN_NODATA, STRADDLING, IN_DATA])))
    assert len(everything["boxes"]) == 4 and everything["pixels"].tolist() == [21 * 128 * 128]  # without a mask


@pytest.mark.parametrize("workers", [0, 2])
def test_the_pipeline_skips_and_drops_the_same(raster, workers):
    predictor = MultiScaleTiledPredictor(BlobModel(), replace(ONE_SCALE, scales=(1.0, 0.5),
                                                              valid_ranges=((0.0, -1.0), (0.0, -1.0))))
    tasks = [ImageTask(0, raster), ImageTask(1, raster)]
    got = list(run_tiled_inference(predictor, build_tile_loader(tasks, predictor, num_workers=workers)))
    with open_image(raster) as reader:
        alone = predictor(reader)
    assert sorted(i for i, *_ in got) == [0, 1]
    for _, det, size, error in got:
        assert error == "" and size == (H, W)
        np.testing.assert_array_equal(det["boxes"].numpy(), alone["boxes"].numpy())
        np.testing.assert_array_equal(det["pixels"], alone["pixels"])
    assert alone["pixels"][0] == 15 * 128 * 128
