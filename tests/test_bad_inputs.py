"""Bad inputs at every entry point: a clear error naming the file and the problem, or a counted skip.

Cases covered elsewhere: malformed/degenerate COCO json (test_coco_records.py), truncated or foreign
artifacts (test_artifacts.py), proposals of another data set (test_negative_chips.py), wrong config
keys and missing data paths (test_train_net_setup.py).
"""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from sniper_d2.image_io import ImageReadError, read_image, read_image_size
from sniper_d2.data.mapper import SniperDatasetMapper
from sniper_d2.plans import PlanParams, build_plan, load_or_build_plan, save_plan


def _rgb(h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _chip_dict(path, h, w, boxes=((10, 10, 30, 30),), chip=None):
    return {"file_name": str(path), "image_id": 1, "height": h, "width": w,
            "annotations": [{"bbox": list(b), "bbox_mode": 0, "category_id": 0, "iscrowd": 0} for b in boxes],
            "chip": list(chip or (0, 0, w, h)), "scale": 1.0, "valid_range": [0, float("inf")],
            "is_negative": False}


def _mapper(skip=False):
    return SniperDatasetMapper(chip_size=128, image_format="BGR", horizontal_flip=False, skip_bad_images=skip)


# --- images -------------------------------------------------------------------------------------

def test_missing_image_raises_naming_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"nothere\.jpg: image file not found"):
        _mapper()(_chip_dict(tmp_path / "nothere.jpg", 60, 80))


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated_image_raises_naming_the_file(tmp_path, ext):
    path = tmp_path / f"cut.{ext}"
    Image.fromarray(_rgb(200, 200)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=rf"cut\.{ext}: corrupt or truncated"):
        _mapper()(_chip_dict(path, 200, 200))


def test_not_an_image_raises(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is text")
    with pytest.raises(ImageReadError, match=r"notes\.jpg: not a readable image"):
        read_image(str(path))


def test_skip_bad_images_returns_none_and_counts(tmp_path, caplog):
    mapper = _mapper(skip=True)
    with caplog.at_level(logging.WARNING):
        assert mapper(_chip_dict(tmp_path / "a.jpg", 60, 80)) is None
        assert mapper(_chip_dict(tmp_path / "b.jpg", 60, 80)) is None
    assert mapper.num_skipped == 2
    assert "a.jpg" in caplog.text and "2 skipped so far" in caplog.text


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_gray_rgba_palette_and_16bit_images_load_as_3_channel_uint8(tmp_path, mode):
    rgb = _rgb()
    if mode == "I;16":
        img = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    elif mode == "RGBA":
        img = Image.fromarray(np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2))
    else:
        img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    img.save(path)
    out = _mapper()(_chip_dict(path, 60, 80))
    assert out["image"].shape == (3, 128, 128) and str(out["image"].dtype) == "torch.uint8"
    if mode == "I;16":  # 16-bit values scaled to 8 bits, not clipped to white
        np.testing.assert_array_equal(out["image"][0, :60, :80].numpy(), rgb[..., 0])
    if mode == "RGBA":  # opaque alpha: colours unchanged (BGR order)
        np.testing.assert_array_equal(out["image"][:, :60, :80].numpy().transpose(1, 2, 0), rgb[..., ::-1])


def test_exif_rotated_jpeg_is_rotated_and_sized_after_rotation(tmp_path):
    rgb = _rgb(40, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), quality=95)
    assert read_image_size(str(path)) == (100, 40)
    assert read_image(str(path)).shape == (100, 40, 3)
    out = _mapper()(_chip_dict(path, 100, 40))
    assert out["image"].shape == (3, 128, 128)


def test_image_whose_size_differs_from_the_json_is_refused(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(_rgb(60, 80)).save(path)
    with pytest.raises(ImageReadError, match=r"small\.png: image is 80x60 .* data set says 100x50"):
        _mapper()(_chip_dict(path, 50, 100))


# --- boxes ---------------------------------------------------------------------------------------

def test_degenerate_and_outside_boxes_do_not_reach_training(tmp_path):
    path = tmp_path / "ok.png"
    Image.fromarray(_rgb(60, 80)).save(path)
    boxes = [(10, 10, 30, 30), (500, 500, 520, 520), (5, 5, 5, 20)]
    out = _mapper()(_chip_dict(path, 60, 80, boxes=boxes))
    inst = out["instances"]
    assert len(inst) == 1 and inst.gt_valid.tolist() == [True]
    assert inst.gt_boxes.tensor.tolist() == [[10.0, 10.0, 30.0, 30.0]]


# --- plans ---------------------------------------------------------------------------------------

PARAMS = PlanParams(scales=(1.0,), valid_ranges=((0, -1),), chip_size=64, stride=16, neg_min_proposals=(10,))


def _records(n=3):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        xy = rng.uniform(0, 150, (5, 2))
        recs.append({"image_id": i + 1, "file_name": f"{i}.jpg", "height": 200, "width": 200,
                     "boxes": np.concatenate([xy, xy + 20], 1).astype(np.float32),
                     "category_ids": np.ones(5, np.int64), "iscrowd": np.zeros(5, bool),
                     "distractors": np.zeros((0, 4), np.float32)})
    return recs


def test_plan_of_another_data_set_is_rebuilt_not_used(tmp_path, caplog):
    path = tmp_path / "plan.npz"
    save_plan(path, build_plan(_records(3), PARAMS, 1, 0, progress=False))
    with caplog.at_level(logging.INFO):
        plan = load_or_build_plan(path, _records(2), PARAMS, 1, 0, progress=False)
    assert plan.image_index.max() == 1
    assert "another data set" in caplog.text


def test_plan_file_cut_short_is_detected_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "plan.npz"
    records = _records(3)
    save_plan(path, build_plan(records, PARAMS, 2, 0, progress=False))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        plan = load_or_build_plan(path, records, PARAMS, 2, 0, progress=False)
    assert len(plan) > 0 and "plan.npz" in caplog.text


# --- tools ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"images": [], "annotations": [], "categories": []}), "no (non-crowd, non-empty) boxes"),
])
def test_stats_tool_reports_bad_json_in_one_line(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content)
    proc = subprocess.run([sys.executable, "tools/compute_scale_stats.py", str(path), "--output-dir",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_plan_tool_reports_a_missing_json(tmp_path):
    proc = subprocess.run([sys.executable, "tools/plan_chips.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
                           "--dataset-json", str(tmp_path / "none.json"), "--output", str(tmp_path / "p.npz")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "none.json" in proc.stderr and "Traceback" not in proc.stderr


# --- inference ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A randomly initialised tiny model saved as a checkpoint (inference speed/robustness only)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import sniper_d2.modeling  # noqa: F401
    from sniper_d2.config import add_sniper_config

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(f"{ROOT}/configs/sniper_tiny_cpu.yaml")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("random")
    return str(folder / "random.pth")


def test_infer_tool_skips_unreadable_files_and_keeps_going(tmp_path, random_checkpoint):
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(_rgb(120, 160)).save(images / "good.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(_rgb(90, 100, seed=1)).save(images / "also_good.jpg")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "tools/infer.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
                           "--input", str(images), "--output", str(out), "--confidence-threshold", "0.0",
                           "SNIPER.TEST.TILE_SIZE", "128", "SNIPER.TEST.TILE_OVERLAP", "32", "MODEL.WEIGHTS", random_checkpoint],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr  # detectron2's logger writes to stdout
    assert "broken.jpg" in log and "skipped 1 unreadable" in log
    assert sorted(p.name for p in out.iterdir()) == ["also_good.jpg", "good.jpg", "results.json", "results_meta.json"]
    meta = json.loads((out / "results_meta.json").read_text())
    assert meta["format"] == "sniper_d2.infer_results" and meta["images"] == 2
    assert meta["skipped"] == [str(images / "broken.jpg")]


def test_infer_tool_reports_a_pattern_matching_nothing(tmp_path, random_checkpoint):
    proc = subprocess.run([sys.executable, "tools/infer.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
                           "--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "o"),
                           "MODEL.WEIGHTS", random_checkpoint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "no such file, or no image in it" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluation_names_a_missing_validation_image(tmp_path):
    import json

    from detectron2.evaluation import DatasetEvaluator

    from sniper_d2.data.datasets import register_coco_json
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
    from sniper_d2.inference.evaluation import tiled_inference_on_dataset

    path = tmp_path / "gone.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg", "height": 5, "width": 5}],
                                "annotations": [], "categories": [{"id": 1, "name": "c0"}]}))
    register_coco_json("bad_inputs_gone", str(path))
    params = TiledInferenceParams(scales=(1.0,), valid_ranges=((0.0, -1.0),), tile_size=64, tile_overlap=16)
    import torch

    predictor = MultiScaleTiledPredictor(torch.nn.Identity(), params)
    with pytest.raises(ImageReadError, match=r"gone\.jpg: image file not found"):
        tiled_inference_on_dataset(predictor, "bad_inputs_gone", DatasetEvaluator())
