"""sniper_d2.geo: pixel boxes <-> map polygons, vector files written and read back."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sniper_d2.geo import (GeoError, Georeference, boxes_to_rings, labels_to_pixel_boxes, map_to_pixel,
                           pixel_to_map, read_georeference, read_vector_labels, reproject_points,
                           write_boxes_vector, write_detections_vector)

pyogrio = pytest.importorskip("pyogrio")
shapely = pytest.importorskip("shapely")
rasterio = pytest.importorskip("rasterio")

# A north-up UTM raster, 5 cm pixels (as the synthetic orthomosaic).
GEOREF = Georeference("EPSG:32611", (0.05, 0.0, 500000.0, 0.0, -0.05, 3762000.0), 2000, 3000, "site.tif")
BOXES = np.array([[10.0, 20.0, 50.0, 45.5], [2999.0, 1990.0, 3000.0, 2000.0], [0.0, 0.0, 0.25, 1.0],
                  [1200.3, 800.7, 1290.9, 870.1]])
SCORES = np.array([0.9, 0.5, 0.25, 0.125])
NAMES = ["car", "tree", "car", "roof"]


def _read(path):
    """(crs, (N, 5, 2) ring points, {field: values}) read back with pyogrio + shapely."""
    meta, _, wkb, data = pyogrio.raw.read(path)
    geoms = shapely.from_wkb(wkb)
    rings = shapely.get_coordinates(shapely.get_exterior_ring(geoms)).reshape(len(geoms), -1, 2)
    return meta["crs"], rings, dict(zip(meta["fields"], data)), geoms


def _affine_oracle(boxes, t):
    """The four corners of each box through the affine, written out longhand: (N, 4, 2)."""
    a, b, c, d, e, f = t
    corners = boxes[:, [[0, 1], [2, 1], [2, 3], [0, 3]]]  # (N, 4, 2) pixel corners
    x, y = corners[..., 0], corners[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], -1)


def _same_corner_sets(rings, expect, atol):
    """Every ring's 4 distinct corners equal the expected ones, in any cyclic order."""
    got = np.sort(rings[:, :4].round(6).view("f8,f8").reshape(len(rings), 4), axis=1)
    exp = np.sort(expect.round(6).view("f8,f8").reshape(len(expect), 4), axis=1)
    g = got.view("f8").reshape(-1, 4, 2)
    x = exp.view("f8").reshape(-1, 4, 2)
    np.testing.assert_allclose(g, x, rtol=0, atol=atol)


@pytest.mark.parametrize("ext", [".geojson", ".gpkg"])
def test_detections_read_back_equal_the_affine_transformed_boxes(tmp_path, ext):
    path = str(tmp_path / f"det{ext}")
    write_detections_vector(path, GEOREF, BOXES, SCORES, NAMES)
    crs, rings, fields, geoms = _read(path)
    assert crs == "EPSG:32611"
    _same_corner_sets(rings, _affine_oracle(BOXES, GEOREF.transform), atol=1e-4)
    assert list(fields["class"]) == NAMES
    np.testing.assert_allclose(fields["score"], SCORES)
    np.testing.assert_allclose(np.stack([fields[k] for k in ("x0", "y0", "x1", "y1")], 1), BOXES, atol=0.005)
    assert shapely.is_ccw(shapely.get_exterior_ring(geoms)).all()  # RFC 7946 winding
    np.testing.assert_allclose(shapely.area(geoms), (BOXES[:, 2] - BOXES[:, 0]) * (BOXES[:, 3] - BOXES[:, 1])
                               * 0.05 ** 2, rtol=1e-5)


@pytest.mark.parametrize("ext", [".geojson", ".gpkg"])
def test_detections_in_wgs84_equal_the_boxes_reprojected_by_gdal(tmp_path, ext):
    from rasterio.warp import transform as gdal_transform

    path = str(tmp_path / f"det{ext}")
    write_detections_vector(path, GEOREF, BOXES, SCORES, NAMES, dst_crs="EPSG:4326")
    crs, rings, fields, _ = _read(path)
    assert crs == "EPSG:4326"
    corners = _affine_oracle(BOXES, GEOREF.transform).reshape(-1, 2)
    lon, lat = gdal_transform("EPSG:32611", "EPSG:4326", corners[:, 0], corners[:, 1])
    expect = np.stack([lon, lat], -1).reshape(-1, 4, 2)
    assert -118 < expect[0, 0, 0] < -116 and 33 < expect[0, 0, 1] < 35  # southern California
    _same_corner_sets(rings, expect, atol=1e-8)  # about 1 mm


def test_geojson_crs_member_follows_rfc7946(tmp_path):
    utm, wgs = str(tmp_path / "utm.geojson"), str(tmp_path / "wgs.geojson")
    write_detections_vector(utm, GEOREF, BOXES, SCORES, NAMES)
    write_detections_vector(wgs, GEOREF, BOXES, SCORES, NAMES, dst_crs="EPSG:4326")
    with open(utm) as f:
        u = json.load(f)
    with open(wgs) as f:
        w = json.load(f)
    assert u["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32611"
    assert "crs" not in w  # RFC 7946: WGS84 longitude/latitude, no crs member
    assert (u["format"], u["version"]) == (w["format"], w["version"]) == ("sniper_d2.boxes", 1)
    meta = pyogrio.read_info(str(tmp_path / "utm.geojson"))
    assert meta["features"] == len(BOXES)


def test_gpkg_carries_format_and_version(tmp_path):
    path = str(tmp_path / "det.gpkg")
    write_detections_vector(path, GEOREF, BOXES, SCORES, NAMES)
    meta = pyogrio.read_info(path)
    assert meta["dataset_metadata"]["format"] == "sniper_d2.boxes"
    assert meta["dataset_metadata"]["version"] == "1"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("ext", [".geojson", ".gpkg"])
def test_no_detections_write_an_empty_layer(tmp_path, ext):
    path = str(tmp_path / f"none{ext}")
    write_detections_vector(path, GEOREF, np.zeros((0, 4)), np.zeros(0), [])
    assert pyogrio.read_info(path)["features"] == 0


def test_plain_image_and_unknown_extension_are_refused(tmp_path):
    import cv2

    png = str(tmp_path / "plain.png")
    cv2.imwrite(png, np.zeros((8, 8, 3), np.uint8))
    assert read_georeference(png) is None
    with pytest.raises(GeoError, match="plain.png: not georeferenced"):
        write_detections_vector(str(tmp_path / "d.geojson"), png, BOXES, SCORES, NAMES)
    with pytest.raises(GeoError, match="d.shp: unknown vector format"):
        write_detections_vector(str(tmp_path / "d.shp"), GEOREF, BOXES, SCORES, NAMES)


transforms = st.tuples(st.floats(0.01, 2.0), st.floats(-0.5, 0.5), st.floats(-1e6, 1e6),
                       st.floats(-0.5, 0.5), st.floats(-2.0, -0.01), st.floats(-1e7, 1e7))


@settings(max_examples=60, deadline=None)
@given(transforms, st.lists(st.tuples(st.floats(0, 5000), st.floats(0, 5000)), min_size=1, max_size=20))
def test_map_to_pixel_inverts_pixel_to_map(t, pts):
    a, b, _, d, e, _ = t
    if abs(a * e - b * d) < 1e-3:
        return
    p = np.array(pts)
    np.testing.assert_allclose(map_to_pixel(pixel_to_map(p, t), t), p, rtol=0, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(0.05, 0.0, 5e5, 0.0, -0.05, 3.76e6), (0.3, 0.0, 0.0, 0.0, 0.3, 0.0),
                        (0.1, 0.02, 1e3, 0.03, -0.1, 2e3)]))
def test_rings_wind_counter_clockwise_on_the_map(t):
    rings = boxes_to_rings(BOXES, t)
    assert (rings[:, 0] == rings[:, 4]).all()
    assert shapely.is_ccw(shapely.linearrings(rings)).all()


def test_labels_round_trip_map_pixel_map_within_a_pixel(tmp_path):
    """Boxes written in EPSG:4326, read back as pixel boxes (reprojected, inverse affine), then written
    again in the raster's CRS: every corner lands within a pixel of where it started."""
    first, second = str(tmp_path / "wgs.geojson"), str(tmp_path / "utm.gpkg")
    write_boxes_vector(first, GEOREF, BOXES, {"class": np.array(NAMES, object)}, dst_crs="EPSG:4326")
    labels = read_vector_labels(first)
    assert labels.crs == "EPSG:4326"
    px = labels_to_pixel_boxes(labels, GEOREF)
    np.testing.assert_allclose(px.boxes, BOXES, rtol=0, atol=1e-3)  # pixels
    assert list(px.class_names) == NAMES and px.clipped == 0
    write_boxes_vector(second, GEOREF, px.boxes, {"class": px.class_names})
    _, rings, _, _ = _read(second)
    _same_corner_sets(rings, _affine_oracle(BOXES, GEOREF.transform), atol=0.05)  # one pixel = 5 cm


def test_reproject_points_keeps_shape_and_nan():
    p = np.array([[[500000.0, 3762000.0], [np.nan, np.nan]]])
    q = reproject_points(p, "EPSG:32611", "EPSG:4326")
    assert q.shape == p.shape and np.isnan(q[0, 1]).all() and np.isfinite(q[0, 0]).all()


def test_gpkg_multipolygons_and_triangles_become_their_pixel_extent(tmp_path):
    """Labels drawn as arbitrary polygons (a multipolygon, a triangle) in a named GeoPackage layer and
    class field: each becomes the bounding box of all its vertices, in pixels."""
    path = str(tmp_path / "trees.gpkg")
    px = [[[[100, 100], [120, 100], [120, 130], [100, 100]]], [[[200, 50], [210, 50], [210, 60], [200, 50]]]]
    tri = [[300, 400], [340, 410], [310, 460], [300, 400]]
    multi = shapely.multipolygons([shapely.polygons(pixel_to_map(np.array(p[0], float), GEOREF.transform))
                                   for p in px])
    triangle = shapely.polygons(pixel_to_map(np.array(tri, float), GEOREF.transform))
    pyogrio.raw.write(path, shapely.to_wkb(np.array([multi, triangle])), [np.array(["oak", "pine"], object)],
                      ["species"], layer="trees", driver="GPKG", geometry_type="Unknown", crs="EPSG:32611")
    labels = read_vector_labels(path, class_field="species", layer="trees")
    boxes = labels_to_pixel_boxes(labels, GEOREF)
    np.testing.assert_allclose(boxes.boxes, [[100, 50, 210, 130], [300, 400, 340, 460]], rtol=0, atol=1e-6)
    assert list(boxes.class_names) == ["oak", "pine"]


def test_unknown_destination_crs_is_a_geo_error(tmp_path):
    with pytest.raises(GeoError, match="d.geojson: unknown CRS 'EPSG:999999'"):
        write_detections_vector(str(tmp_path / "d.geojson"), GEOREF, BOXES, SCORES, NAMES, dst_crs="EPSG:999999")
