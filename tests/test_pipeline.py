"""The prefetching tile pipeline gives, per image, exactly what the predictor gives on that image alone,
whatever the workers and however batches straddle images; unreadable images come back as errors."""

import os
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest
import rasterio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_tiling import BlobModel, ONE_SCALE, painted  # noqa: E402

from sniper_d2.image_io import read_image  # noqa: E402
from sniper_d2.inference import MultiScaleTiledPredictor  # noqa: E402
from sniper_d2.inference.pipeline import ImageTask, build_tile_loader, run_tiled_inference  # noqa: E402

PARAMS = replace(ONE_SCALE, scales=(1.0, 0.5, -1.0), valid_ranges=((0.0, 40.0), (30.0, 90.0), (80.0, -1.0)),
                 tile_size=128, tile_overlap=48, tile_batch_size=3, fit_size=128)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(200, 300), (90, 120), (260, 180), (150, 150)]):
        xy = rng.integers(0, [w - 60, h - 60], (5, 2))
        boxes = np.concatenate([xy, xy + rng.integers(8, 60, (5, 2))], axis=1)
        ext = ".png" if i % 2 == 0 else ".tif"
        path = str(d / f"im{i}{ext}")
        if ext == ".tif":
            with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", tiled=True,
                               blockxsize=32, blockysize=32) as ds:
                ds.write(painted(h, w, boxes)[..., ::-1].transpose(2, 0, 1))
        else:
            cv2.imwrite(path, painted(h, w, boxes))
        paths.append(path)
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_every_image_gets_what_the_predictor_gives_it_alone(images, workers):
    predictor = MultiScaleTiledPredictor(BlobModel(), PARAMS)
    tasks = [ImageTask(i, p) for i, p in enumerate(images)]
    got = {i: det for i, det, _, err in run_tiled_inference(predictor, build_tile_loader(tasks, predictor,
                                                                                         num_workers=workers))}
    assert sorted(got) == list(range(len(images)))
    for i, path in enumerate(images):
        alone = predictor(read_image(path))
        for key in ("boxes", "scores", "classes"):
            np.testing.assert_array_equal(got[i][key].numpy(), alone[key].numpy(), err_msg=f"{path} {key}")


def test_batches_straddle_images(images):
    model = BlobModel()
    predictor = MultiScaleTiledPredictor(model, replace(PARAMS, tile_batch_size=4))
    tasks = [ImageTask(i, p) for i, p in enumerate(images)]
    list(run_tiled_inference(predictor, build_tile_loader(tasks, predictor)))
    n_tiles = sum(sum(len(w) for _, _, w in predictor.scale_windows(read_image(p).shape[:2])) for p in images)
    assert [len(c) for c in model.calls] == [4] * (n_tiles // 4) + ([n_tiles % 4] if n_tiles % 4 else [])


def test_an_unreadable_image_comes_back_as_an_error_naming_it(images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    predictor = MultiScaleTiledPredictor(BlobModel(), PARAMS)
    tasks = [ImageTask(0, images[0]), ImageTask(1, str(bad)), ImageTask(2, images[1])]
    out = {i: (det, err) for i, det, _, err in run_tiled_inference(predictor, build_tile_loader(tasks, predictor))}
    assert out[1][0] is None and "not a readable image" in out[1][1]
    assert out[0][1] == "" and out[2][1] == ""


def test_a_size_that_disagrees_with_the_data_set_is_an_error(images):
    predictor = MultiScaleTiledPredictor(BlobModel(), PARAMS)
    tasks = [ImageTask(0, images[0], expected_size=(201, 300))]
    (index, det, _, err), = run_tiled_inference(predictor, build_tile_loader(tasks, predictor))
    assert det is None and "data set says 300x201" in err


def test_tile_loader_workers_default_to_none_on_the_cpu_and_the_loader_setting_on_a_gpu():
    from sniper_d2.cli import setup_cfg
    from sniper_d2.inference.pipeline import tile_loader_workers

    cfg = setup_cfg("configs/sniper_tiny_cpu.yaml", ["DATALOADER.NUM_WORKERS", "3"], purpose="read")
    cfg.defrost()
    assert cfg.SNIPER.TEST.NUM_WORKERS == -1 and tile_loader_workers(cfg) == 0  # MODEL.DEVICE cpu
    cfg.MODEL.DEVICE = "cuda:1"
    assert tile_loader_workers(cfg) == 3
    cfg.SNIPER.TEST.NUM_WORKERS = 2
    assert tile_loader_workers(cfg) == 2
    cfg.MODEL.DEVICE = "cpu"
    assert tile_loader_workers(cfg) == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_autofocus_through_the_pipeline_equals_autofocus_on_the_whole_image(tmp_path, workers):
    """Workers cut the coarse pass, the main process zooms in on a reader: the same result as
    AutoFocus on the decoded image."""
    import json

    from test_autofocus import PARAMS as AUTOFOCUS_PARAMS, FocusOracleModel
    from test_stitching_oracle import make_dataset

    from sniper_d2.inference import TiledInferenceParams

    gt = json.load(open(make_dataset(str(tmp_path), n=2, seed=3)))
    paths = [str(tmp_path / entry["file_name"]) for entry in gt["images"]]
    predictor = MultiScaleTiledPredictor(FocusOracleModel(), TiledInferenceParams(
        **AUTOFOCUS_PARAMS, mode="autofocus", focus_thresholds=(0.5, 0.5, 0.5), focus_dilations=(1, 1, 1),
        focus_min_chip_sizes=(128, 128, 128)))
    tasks = [ImageTask(i, p) for i, p in enumerate(paths)]
    got = {i: det for i, det, _, _ in run_tiled_inference(predictor, build_tile_loader(tasks, predictor,
                                                                                        num_workers=workers))}
    for i, path in enumerate(paths):
        alone = predictor(read_image(path))
        assert set(alone["autofocus"]["maps"]) == {2, 1}  # guard: both finer scales zoomed in
        for key in ("boxes", "scores", "classes"):
            np.testing.assert_array_equal(got[i][key].numpy(), alone[key].numpy(), err_msg=f"{path} {key}")
        np.testing.assert_array_equal(got[i]["pixels"], alone["pixels"])
        for s_idx, chips in alone["autofocus"]["chips"].items():
            np.testing.assert_array_equal(got[i]["autofocus"]["chips"][s_idx], chips)
