"""The synthetic GDAL-style orthomosaic (tools/make_synthetic_dataset.py --ortho)."""

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pyogrio = pytest.importorskip("pyogrio")

from sniper_d2.synthetic import (OrthoSpec, _OrthoTexture, make_synthetic_ortho, ortho_layout,  # noqa: E402
                                 ortho_transform, render_ortho_window)

SPEC = OrthoSpec(width_px=1100, height_px=900, tile_px=256, seed=3)


@pytest.fixture(scope="module")
def ortho(tmp_path_factory):
    return make_synthetic_ortho(str(tmp_path_factory.mktemp("ortho")), SPEC, progress=False)


def test_raster_is_gdal_style(ortho):
    from rasterio.enums import MaskFlags

    with rasterio.open(ortho["raster"]) as ds:
        assert (ds.width, ds.height, ds.count) == (1100, 900, 3)
        assert ds.crs.to_epsg() == 32611
        assert tuple(ds.transform[:6]) == pytest.approx(ortho_transform(SPEC))
        assert ds.block_shapes == [(256, 256)] * 3
        assert ds.compression.name == "jpeg" and ds.photometric.name == "ycbcr"
        assert ds.mask_flag_enums[0] == [MaskFlags.per_dataset]  # an internal mask, as GDAL writes it
        assert ds.overviews(1) == [2, 4, 8]  # down to half a tile
        assert ds.tags()["SNIPER_D2_VERSION"] == "1"


def test_nodata_border_follows_the_footprint(ortho):
    layout = ortho_layout(SPEC)
    with rasterio.open(ortho["raster"]) as ds:
        mask = ds.dataset_mask()
        pixels = ds.read()
    assert mask[0, 0] == 0 and mask[-1, -1] == 0 and mask[450, 550] == 255
    import cv2

    # Black in the border, up to JPEG ringing within a block of the footprint's edge.
    far = cv2.erode((mask == 0).astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
    assert far.sum() > 0.1 * mask.size and pixels[:, far].max() <= 8
    # Every object lies on valid data.
    b = layout["boxes"]
    cx, cy = ((b[:, 0] + b[:, 2]) / 2).astype(int), ((b[:, 1] + b[:, 3]) / 2).astype(int)
    assert len(b) > 20 and (mask[cy, cx] == 255).all()


def test_objects_do_not_overlap_and_span_sizes():
    b = ortho_layout(OrthoSpec(width_px=3000, height_px=3000, seed=5))["boxes"].astype(np.float64)
    ix = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    iy = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    overlap = (ix > 0) & (iy > 0)
    np.fill_diagonal(overlap, False)
    assert not overlap.any()
    size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    assert size.min() < 12 and size.max() > 60 and (size < 40).mean() > 0.8


@pytest.mark.parametrize("window", [(0, 0, 300, 200), (517, 333, 129, 257), (1000, 800, 100, 100)])
def test_windows_are_seamless(window):
    """A window rendered alone equals the same pixels cut from a larger window: writing by windows
    gives the same raster as rendering it whole."""
    layout, texture = ortho_layout(SPEC), _OrthoTexture(SPEC)
    whole, whole_mask = render_ortho_window(SPEC, layout, texture, 0, 0, SPEC.width_px, SPEC.height_px)
    x, y, w, h = window
    part, part_mask = render_ortho_window(SPEC, layout, texture, x, y, w, h)
    np.testing.assert_array_equal(part, whole[y:y + h, x:x + w])
    np.testing.assert_array_equal(part_mask, whole_mask[y:y + h, x:x + w])


def test_labels_are_the_truth_boxes_in_map_coordinates(ortho):
    import shapely

    table = pyogrio.raw.read(ortho["labels"])
    meta, geometry, fields = table[0], table[2], table[3]
    assert meta["crs"] == "EPSG:32611"
    polys = shapely.from_wkb(geometry)
    bounds = shapely.bounds(polys)  # (N, 4) map xmin, ymin, xmax, ymax
    a, _, c, _, e, f = ortho_transform(SPEC)
    with open(ortho["truth"]) as fh:
        truth = json.load(fh)
    xywh = np.array([ann["bbox"] for ann in truth["annotations"]])
    expect = np.stack([c + a * xywh[:, 0], f + e * (xywh[:, 1] + xywh[:, 3]),
                       c + a * (xywh[:, 0] + xywh[:, 2]), f + e * xywh[:, 1]], axis=1)
    np.testing.assert_allclose(bounds, expect, rtol=0, atol=0.01 * a)  # the truth json rounds to 0.01 px
    names = [c["name"] for c in truth["categories"]]
    assert list(fields[0]) == [names[ann["category_id"] - 1] for ann in truth["annotations"]]


def test_existing_raster_is_reused(ortho, tmp_path):
    import os

    before = os.stat(ortho["raster"]).st_mtime_ns
    again = make_synthetic_ortho(os.path.dirname(ortho["raster"]), SPEC, progress=False)
    assert os.stat(again["raster"]).st_mtime_ns == before
