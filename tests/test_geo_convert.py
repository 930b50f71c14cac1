"""tools/convert_geo.py: rasters + labels in map coordinates -> COCO json in pixel coordinates."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rasterio")
pyogrio = pytest.importorskip("pyogrio")

from conftest import ROOT  # noqa: E402
from sniper_d2.converters.geo import convert_rasters  # noqa: E402
from sniper_d2.geo import GeoError, pixel_to_map, reproject_points  # noqa: E402
from sniper_d2.synthetic import OrthoSpec, make_synthetic_ortho, ortho_transform  # noqa: E402

SPEC = OrthoSpec(width_px=640, height_px=520, seed=7, large_fraction=0.3)
# A second raster east of the first, sharing its label file.
SPEC_EAST = OrthoSpec(width_px=640, height_px=520, seed=8, origin_m=(500000.0 + 640 * 0.05, 3762000.0))


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_geo", os.path.join(ROOT, "tools", "convert_geo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _truth_xyxy(path):
    with open(path) as f:
        coco = json.load(f)
    b = np.array([a["bbox"] for a in coco["annotations"]])
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1), [names[a["category_id"]] for a in coco["annotations"]]


def _feature(ring_lonlat, cls, kind="Polygon"):
    coords = [ring_lonlat] if kind == "Polygon" else ring_lonlat
    return {"type": "Feature", "properties": {"class": cls}, "geometry": {"type": kind, "coordinates": coords}}


def _box_lonlat(box_px, spec):
    x0, y0, x1, y1 = box_px
    ring = pixel_to_map(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], float), ortho_transform(spec))
    return reproject_points(ring, spec.crs, "EPSG:4326").tolist()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One ortho with its labels in EPSG:4326, plus extra features: one outside the raster, one cut
    by its east edge, a point and a polygon without a class."""
    root = tmp_path_factory.mktemp("geo_convert")
    out = make_synthetic_ortho(str(root), SPEC, labels_crs="EPSG:4326", progress=False)
    with open(out["labels"]) as f:
        collection = json.load(f)
    assert "crs" not in collection  # plain RFC 7946
    extra = [_feature(_box_lonlat((700, 100, 740, 140), SPEC), "disk"),  # outside (east of the raster)
             _feature(_box_lonlat((620, 200, 660, 230), SPEC), "square"),  # cut by the east edge
             _feature(_box_lonlat((10, 10, 11, 11), SPEC)[0], "disk", kind="Point"),
             _feature(_box_lonlat((300, 300, 310, 310), SPEC), "")]
    collection["features"] += extra
    labels = str(root / "labels_extra.geojson")
    with open(labels, "w") as f:
        json.dump(collection, f)
    return {**out, "labels_extra": labels, "root": root}


def test_labels_in_wgs84_give_the_true_pixel_boxes(site):
    coco, report = convert_rasters([site["raster"]], [site["labels"]], str(site["root"]), progress=False)
    truth, names = _truth_xyxy(site["truth"])
    b = np.array([a["bbox"] for a in coco["annotations"]])
    got = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    np.testing.assert_allclose(got, truth, rtol=0, atol=0.02)  # both jsons round to 0.01 px
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert [cats[a["category_id"]] for a in coco["annotations"]] == names
    assert report == {"images": 1, "objects": len(truth), "outside": 0, "clipped": 0, "skipped": {}}
    image = coco["images"][0]
    assert (image["file_name"], image["width"], image["height"]) == ("ortho.tif", 640, 520)
    assert image["geo"]["crs"] == "EPSG:32611"


def test_outside_cut_and_unusable_features_are_counted(site):
    coco, report = convert_rasters([site["raster"]], [site["labels_extra"]], str(site["root"]), progress=False)
    truth, _ = _truth_xyxy(site["truth"])
    assert report["objects"] == len(truth) + 1 and report["outside"] == 1 and report["clipped"] == 1
    assert report["skipped"] == {"not polygons": 1, "without a class": 1}
    np.testing.assert_allclose(coco["annotations"][-1]["bbox"], [620, 200, 20, 30], atol=0.02)  # clipped at x=640


def test_one_label_file_serves_several_rasters(site, tmp_path):
    east = make_synthetic_ortho(str(tmp_path), SPEC_EAST, name="east", progress=False)
    coco, report = convert_rasters([site["raster"], east["raster"]], [site["labels_extra"]], str(site["root"]),
                                   progress=False)
    assert report["images"] == 2 and report["outside"] == 0  # the east raster holds the "outside" feature
    on_east = [a["bbox"] for a in coco["annotations"] if a["image_id"] == 2]
    # The feature outside the first raster (x 700-740) and the east part of the cut one (x 640-660).
    np.testing.assert_allclose(sorted(on_east), [[0, 200, 20, 30], [60, 100, 40, 40]], atol=0.02)
    assert report["clipped"] == 2  # the cut feature, once on each raster
    assert coco["images"][1]["file_name"] == os.path.relpath(east["raster"], str(site["root"]))


def test_named_classes_fix_the_ids(site):
    coco, _ = convert_rasters([site["raster"]], [site["labels"]], str(site["root"]),
                              classes=["triangle", "square", "disk", "car"], progress=False)
    assert [c["name"] for c in coco["categories"]] == ["triangle", "square", "disk", "car"]
    with pytest.raises(GeoError, match="ortho_labels.geojson: classes \\['triangle'\\] are not among"):
        convert_rasters([site["raster"]], [site["labels"]], str(site["root"]), classes=["disk", "square"],
                        progress=False)


def test_cli_writes_the_json(site, tmp_path):
    out = tmp_path / "train.json"
    proc = subprocess.run([sys.executable, "tools/convert_geo.py", "--raster", site["raster"], "--labels",
                           site["labels_extra"], "--output", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 features outside the rasters, 1 clipped at an edge, 2 skipped" in proc.stdout
    with open(out) as f:
        coco = json.load(f)
    assert os.path.isfile(os.path.join(tmp_path, coco["images"][0]["file_name"]))


def _bad_inputs(site, tmp_path):
    import cv2
    import pyogrio.raw
    import shapely

    plain = str(tmp_path / "plain.tif")
    cv2.imwrite(plain, np.zeros((16, 16, 3), np.uint8))
    no_crs = str(tmp_path / "no_crs.shp")
    pyogrio.raw.write(no_crs, shapely.to_wkb(shapely.polygons([[[0, 0], [1, 0], [1, 1], [0, 0]]])),
                      [np.array(["disk"], object)], ["class"], driver="ESRI Shapefile", geometry_type="Polygon")
    empty_file = str(tmp_path / "empty.geojson")
    open(empty_file, "w").close()
    no_features = str(tmp_path / "none.geojson")
    with open(no_features, "w") as f:
        json.dump({"type": "FeatureCollection", "features": []}, f)
    r, lab = site["raster"], site["labels"]
    return [([plain], [lab], "plain.tif: not georeferenced"),
            ([r], [no_crs], "no_crs.shp: has no CRS"),
            ([r], [empty_file], "empty.geojson: cannot be read as a vector file"),
            ([r], [no_features], "none.geojson: has no features"),
            ([r, r], [lab, lab, lab], "2 rasters but 3 label files"),
            ([str(tmp_path / "missing.tif")], [lab], "missing.tif: raster not found")]


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_bad_inputs_end_in_one_line_naming_the_file(site, tmp_path):
    tool = _load_tool()
    cases = _bad_inputs(site, tmp_path)
    cases.append(([site["raster"]], [site["labels"]], "ortho_labels.geojson: no field 'species'"))
    for rasters, labels, message in cases:
        argv = ["--raster", *rasters, "--labels", *labels, "--output", str(tmp_path / "out.json")]
        if "species" in message:
            argv += ["--class-field", "species"]
        with pytest.raises(SystemExit) as exit_info:
            tool.run_main(tool.main, "convert_geo.py", argv)
        text = str(exit_info.value.code)
        assert text.startswith("convert_geo.py: error: ") and message in text and "\n" not in text, text
    assert not os.path.exists(tmp_path / "out.json")
