"""tools/infer.py end to end with an oracle detector: the results json holds exactly the ground truth
(XYWH, the data set's category ids), drawn images are written under unique names, unreadable
files are skipped with a warning naming them, and --confidence-threshold filters.

The oracle (tests/infer_oracle.py: score (class + 1) / 3, so a threshold of 0.5 keeps classes 1
and 2 only) is registered as a detectron2 meta-architecture, so the tool builds and loads it like
any model (MODEL.META_ARCHITECTURE, MODEL.WEIGHTS).
"""

import importlib.util
import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from infer_oracle import FolderOracle  # registers the oracle meta-architecture
from test_stitching_oracle import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool():
    spec = importlib.util.spec_from_file_location("infer_tool", os.path.join(ROOT, "tools", "infer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(gt json, images folder with a corrupt file and a repeated stem, checkpoint, overrides)."""
    root = tmp_path_factory.mktemp("infer_tool")
    gt_path = make_dataset(str(root / "data"), n=2, seed=5)
    images = root / "in"
    (images / "sub").mkdir(parents=True)
    shutil.copy(root / "data" / "0.png", images / "0.png")
    shutil.copy(root / "data" / "1.png", images / "sub" / "0.png")  # same stem as in/0.png
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    torch.save({"model": FolderOracle(None).state_dict()}, root / "oracle.pth")
    opts = ["MODEL.META_ARCHITECTURE", "FolderOracle", "MODEL.WEIGHTS", str(root / "oracle.pth"),
            "SNIPER.REGISTER_COCO", f'(("infer_tool_gt", "{gt_path}", ""),)', "DATASETS.TEST", '("infer_tool_gt",)',
            "SNIPER.TEST.SCALES", "(2.0, 1.0, 0.5)", "SNIPER.TEST.VALID_RANGES", "((0, 40), (30, 120), (100, -1))",
            "SNIPER.TEST.TILE_SIZE", "256", "SNIPER.TEST.TILE_OVERLAP", "128", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    return gt_path, images, opts


def run_tool(args, opts):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("sniper_d2.infer")
    logger.addHandler(handler)
    try:
        load_tool().main(args + opts)
    finally:
        logger.removeHandler(handler)
    return [r.getMessage() for r in records]


def expected_results(gt_path, image_files, min_category_id=1):
    """{(file, category_id, XYWH bbox)} of the ground truth of the given images (by file name)."""
    gt = json.load(open(gt_path))
    by_id = {im["id"]: im["file_name"] for im in gt["images"]}
    return {(image_files[by_id[a["image_id"]]], a["category_id"], tuple(float(v) for v in a["bbox"]))
            for a in gt["annotations"] if by_id[a["image_id"]] in image_files and a["category_id"] >= min_category_id}


def test_results_json_is_the_ground_truth_and_unreadable_files_are_skipped(setup, tmp_path):
    gt_path, images, opts = setup
    out = tmp_path / "out"
    messages = run_tool(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"),
                         "--input", str(images), str(images / "sub" / "*.png"), "--output", str(out),
                         "--confidence-threshold", "0.0"], opts)
    files = [str(images / "0.png"), str(images / "broken.png"), str(images / "sub" / "0.png")]
    results = json.load(open(out / "results.json"))
    got = {(r["file_name"], r["category_id"], tuple(r["bbox"])) for r in results}
    assert got == expected_results(gt_path, {"0.png": files[0], "1.png": files[2]})
    assert len(got) == len(results), "each object once"
    assert {(r["file_name"], r["image_id"]) for r in results} == {(files[0], 1), (files[2], 3)}

    assert any("broken.png" in m and "skipping" in m for m in messages), messages
    assert any("skipped 1 unreadable" in m for m in messages), messages
    meta = json.load(open(out / "results_meta.json"))
    assert meta["format"] == "sniper_d2.infer_results" and meta["images"] == 2 and meta["skipped"] == [files[1]]

    assert sorted(os.listdir(out)) == ["0.jpg", "0_2.jpg", "results.json", "results_meta.json"]
    drawn = cv2.imread(str(out / "0_2.jpg"))
    original = cv2.imread(files[2])
    h = original.shape[0]  # the drawn copy has a legend strip under the image
    assert drawn.shape[1:] == original.shape[1:] and drawn.shape[0] > h
    assert np.abs(drawn[:h].astype(int) - original).mean() > 0.5


def test_confidence_threshold_filters_results(setup, tmp_path):
    gt_path, images, opts = setup
    out = tmp_path / "out"
    run_tool(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"), "--input", str(images / "0.png"),
              "--output", str(out), "--confidence-threshold", "0.5", "--no-draw"], opts)
    results = json.load(open(out / "results.json"))
    got = {(r["file_name"], r["category_id"], tuple(r["bbox"])) for r in results}
    assert got == expected_results(gt_path, {"0.png": str(images / "0.png")}, min_category_id=2)
    assert sorted(os.listdir(out)) == ["results.json", "results_meta.json"]


def test_a_pattern_matching_nothing_is_an_error_naming_it(setup, tmp_path):
    _, _, opts = setup
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        run_tool(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"),
                  "--input", str(tmp_path / "nothing_here*.png"), "--output", str(tmp_path / "out")], opts)


def test_a_missing_config_file_is_an_error_naming_it(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        run_tool(["--config-file", str(tmp_path / "no_such.yaml"), "--input", str(tmp_path),
                  "--output", str(tmp_path / "out")], [])


def test_a_georeferenced_input_gets_its_detections_as_map_polygons(setup, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    pyogrio = pytest.importorskip("pyogrio")
    import shapely
    from rasterio.transform import Affine

    gt_path, images, opts = setup
    rgb = cv2.cvtColor(cv2.imread(str(images / "0.png")), cv2.COLOR_BGR2RGB)
    transform = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 3762000.0)  # 0.5 m pixels, UTM 11N
    geotiff = tmp_path / "site.tif"
    with rasterio.open(geotiff, "w", driver="GTiff", width=rgb.shape[1], height=rgb.shape[0], count=3,
                       dtype="uint8", crs="EPSG:32611", transform=transform) as ds:
        ds.write(rgb.transpose(2, 0, 1))
    out = tmp_path / "out"
    run_tool(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"), "--input", str(geotiff),
              str(images / "0.png"), "--output", str(out), "--confidence-threshold", "0.0", "--no-draw",
              "--vector-format", "gpkg"], opts)
    results = [r for r in json.load(open(out / "results.json")) if r["file_name"] == str(geotiff)]
    assert {(r["category_id"], tuple(r["bbox"])) for r in results} == \
        {(c, b) for _, c, b in expected_results(gt_path, {"0.png": str(geotiff)})}
    assert sorted(os.listdir(out)) == ["results.json", "results_meta.json", "site.gpkg"]  # 0.png: no map frame
    assert json.load(open(out / "results_meta.json"))["vectors"] == {str(geotiff): str(out / "site.gpkg")}

    meta, _, wkb, fields = pyogrio.raw.read(str(out / "site.gpkg"))
    assert meta["crs"] == "EPSG:32611"
    got = dict(zip(meta["fields"], fields))
    bounds = shapely.bounds(shapely.from_wkb(wkb))  # (N, 4) map x0, y0, x1, y1
    x, y, w, h = np.array([r["bbox"] for r in results]).T  # features in results.json's order
    np.testing.assert_allclose(got["score"], [r["score"] for r in results])
    x0, y0 = 500000.0 + 0.5 * x, 3762000.0 - 0.5 * (y + h)  # the box's lower-left corner on the map
    np.testing.assert_allclose(bounds, np.stack([x0, y0, x0 + 0.5 * w, y0 + 0.5 * h], 1), atol=1e-3)
    assert list(got["class"]) == [f"c{r['category_id'] - 1}" for r in results]  # the data set's names


def test_a_vector_crs_that_is_not_a_crs_is_an_error_naming_it(setup, tmp_path):
    _, images, opts = setup
    with pytest.raises(SystemExit):
        run_tool(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"), "--input", str(images),
                  "--output", str(tmp_path / "out"), "--vector-crs", "EPSG:nope"], opts)


def test_draw_focus_without_autofocus_is_refused_before_the_model_loads(setup, tmp_path, monkeypatch):
    from sniper_d2.config_types import ConfigError
    from sniper_d2.inference import fast_model

    _, images, opts = setup

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the arguments were checked")

    monkeypatch.setattr(fast_model, "build_inference_model", no_model)
    with pytest.raises(ConfigError, match="--draw-focus needs SNIPER.TEST.MODE autofocus"):
        run_tool(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"), "--input", str(images),
                  "--output", str(tmp_path / "out"), "--draw-focus"], opts)
