"""Chip plans: contents per epoch, determinism, negatives, versioned I/O and rebuild on mismatch."""

import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from sniper_d2 import plans
from sniper_d2.chips import boxes_inside, chip_extent, resolve_scale
from sniper_d2.coco import load_coco_records
from sniper_d2.config_types import ValidRange
from sniper_d2.io import ArtifactError, save_npz_artifact
from sniper_d2.plans import PlanParams, build_plan, load_or_build_plan, load_plan, save_plan

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PARAMS = PlanParams(scales=(2.0, 1.0, -1.0), valid_ranges=((0.0, 40.0), (24.0, 160.0), (128.0, -1.0)),
                    chip_size=256, stride=32, neg_min_proposals=(3, 3, 3))


def write_coco(path, seed=0, num_images=5, empty=(3,), crowd_only=(4,)):
    """A tiny COCO json: random boxes 4-400 px in 300-2500 px images; some images empty or crowd-only."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        h, w = (int(v) for v in rng.integers(300, 2500, 2))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": h, "width": w})
        if i in empty:
            continue
        n = 1 if i in crowd_only else int(rng.integers(5, 25))
        for _ in range(n):
            s = float(np.exp(rng.uniform(np.log(4), np.log(min(400, h, w)))))
            x, y = float(rng.uniform(0, w - s)), float(rng.uniform(0, h - s))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "bbox": [x, y, s, s], "category_id": 1,
                         "iscrowd": int(i in crowd_only), "area": s * s})
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}, f)
    return path


@pytest.fixture
def records(tmp_path):
    return load_coco_records(write_coco(tmp_path / "data.json"))[0]


def test_every_epoch_covers_every_valid_box_at_every_scale(records):
    plan = build_plan(records, PARAMS, epochs=3, seed=5, progress=False)
    assert plan.chips.dtype == np.float32 and plan.chips.shape == (len(plan), 4)
    assert plan.epoch.dtype == plan.image_index.dtype == plan.scale_index.dtype == np.int32
    assert plan.scale.dtype == np.float32 and plan.is_negative.dtype == bool
    assert not plan.is_negative.any()
    assert (np.diff(plan.epoch) >= 0).all()  # grouped by epoch
    for i, rec in enumerate(records):
        size = (rec["height"], rec["width"])
        boxes = rec["boxes"][~rec["iscrowd"]]
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        for s, (entry, (lo, hi)) in enumerate(zip(PARAMS.scales, PARAMS.valid_ranges)):
            scale = resolve_scale(entry, size, PARAMS.chip_size)
            ch, cw = chip_extent(size, scale, PARAMS.chip_size)
            valid = (side >= lo) & (side < (np.inf if hi < 0 else hi))
            valid &= (boxes[:, 2] - boxes[:, 0] <= cw) & (boxes[:, 3] - boxes[:, 1] <= ch)
            for e in range(3):
                rows = (plan.image_index == i) & (plan.scale_index == s) & (plan.epoch == e)
                np.testing.assert_allclose(plan.scale[rows], scale, rtol=1e-6)
                if valid.any():
                    assert boxes_inside(boxes[valid], plan.chips[rows]).any(axis=1).all()
                else:
                    assert not rows.any()


def test_images_without_objects_or_with_only_crowd_boxes_get_no_positive_chips(records):
    plan = build_plan(records, PARAMS, epochs=2, seed=0, progress=False)
    assert not np.isin(plan.image_index, [3, 4]).any()
    assert np.isin(plan.image_index, [0, 1, 2]).all()


def test_negative_chips_come_only_from_proposals_and_are_all_stored(records):
    rng = np.random.default_rng(1)
    h, w = records[3]["height"], records[3]["width"]
    xy = rng.uniform(0, 40, (12, 2)) + [w / 3, h / 3]
    small = np.concatenate([xy, xy + 10], 1).astype(np.float32)  # 10 px: valid at scale 0 only
    medium = np.concatenate([xy, xy + 30], 1).astype(np.float32)  # 30 px: valid at scales 0 and 1
    clusters = [small, medium]
    proposals = {records[3]["image_id"]: [small, medium, None]}
    plan = build_plan(records, PARAMS, epochs=2, seed=0, proposals=proposals, progress=False)
    neg = plan.is_negative
    assert set(plan.image_index[neg].tolist()) == {3}
    assert not (plan.image_index[~neg] == 3).any()
    for e in range(2):
        for s in (0, 1):
            rows = neg & (plan.epoch == e) & (plan.scale_index == s)
            assert rows.sum() >= 1
            assert boxes_inside(clusters[s], plan.chips[rows]).any(axis=1).all()
    assert not (neg & (plan.scale_index == 2)).any()
    # Proposals outside a scale's valid range make no negative chip there.
    off_range = build_plan(records, PARAMS, epochs=1, seed=0, progress=False,
                           proposals={records[3]["image_id"]: [None, small, None]})
    assert not off_range.is_negative.any()


def test_plan_is_deterministic_per_seed_and_varies_across_epochs_and_seeds(records):
    a = build_plan(records, PARAMS, epochs=2, seed=3, progress=False)
    b = build_plan(records, PARAMS, epochs=2, seed=3, progress=False)
    c = build_plan(records, PARAMS, epochs=2, seed=4, progress=False)
    for k in ("epoch", "image_index", "scale_index", "scale", "chips", "is_negative"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.config_hash == b.config_hash != c.config_hash
    fixed = a.scale_index < 2  # FIT_SCALE chips are the whole image in every epoch
    e0 = a.chips[fixed & (a.epoch == 0)]
    e1 = a.chips[fixed & (a.epoch == 1)]
    assert e0.shape != e1.shape or not np.array_equal(e0, e1)
    assert a.chips.shape != c.chips.shape or not np.array_equal(a.chips, c.chips)


def test_worker_processes_give_the_same_plan(tmp_path):
    records = load_coco_records(write_coco(tmp_path / "more.json", num_images=20))[0]
    serial = build_plan(records, PARAMS, epochs=2, seed=1, num_workers=0, progress=False)
    parallel = build_plan(records, PARAMS, epochs=2, seed=1, num_workers=2, progress=False)
    np.testing.assert_array_equal(serial.chips, parallel.chips)
    np.testing.assert_array_equal(serial.image_index, parallel.image_index)


def test_a_large_image_planned_a_few_epochs_per_call_gives_the_same_plan(monkeypatch):
    """An orthomosaic's score arrays are large, so its epochs are covered in groups: the chips are
    those of all epochs covered in one call."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 3900, (600, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(6, 60, (600, 2))], 1).astype(np.float32)
    records = [{"image_id": 0, "height": 4000, "width": 4000, "boxes": boxes, "iscrowd": np.zeros(600, bool)}]
    together = build_plan(records, PARAMS, epochs=5, seed=2, progress=False)
    monkeypatch.setattr(plans, "_CELLS_PER_CHUNK", 30_000)  # about one epoch of the finest scale per call
    assert len(plans._epoch_groups(5, 25_000)) == 5
    grouped = build_plan(records, PARAMS, epochs=5, seed=2, progress=False)
    for k in ("epoch", "image_index", "scale_index", "scale", "chips", "is_negative"):
        np.testing.assert_array_equal(getattr(grouped, k), getattr(together, k))
    assert set(together.epoch.tolist()) == set(range(5))


def test_save_load_round_trip(records, tmp_path):
    plan = build_plan(records, PARAMS, epochs=2, seed=0, progress=False)
    save_plan(tmp_path / "p.npz", plan, params=PARAMS, seed=0)
    loaded = load_plan(tmp_path / "p.npz")
    for k in ("epoch", "image_index", "scale_index", "scale", "chips", "is_negative"):
        got, want = getattr(loaded, k), getattr(plan, k)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert (loaded.epochs, loaded.config_hash, loaded.dataset_hash) == (plan.epochs, plan.config_hash,
                                                                        plan.dataset_hash)


def _forbid_build(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the plan was rebuilt although it matched")
    monkeypatch.setattr(plans, "build_plan", fail)


def test_matching_plan_is_loaded_not_rebuilt(records, tmp_path, monkeypatch):
    path = tmp_path / "p.npz"
    first = load_or_build_plan(path, records, PARAMS, 2, 0, progress=False)
    _forbid_build(monkeypatch)
    again = load_or_build_plan(path, records, PARAMS, 2, 0)
    np.testing.assert_array_equal(first.chips, again.chips)


@pytest.mark.parametrize("change, reason", [
    ("params", "scales"), ("epochs", "epochs 2 -> 3"), ("seed", "seed 0 -> 9"),
    ("data", "another data set"), ("proposals", "proposals"),
])
def test_mismatching_plan_is_rebuilt_with_the_reason_logged(records, tmp_path, caplog, change, reason):
    path = tmp_path / "p.npz"
    load_or_build_plan(path, records, PARAMS, 2, 0, progress=False)
    kwargs = dict(records=records, params=PARAMS, epochs=2, seed=0, proposals=None)
    if change == "params":
        kwargs["params"] = PlanParams(scales=(1.5, 1.0, -1.0), valid_ranges=PARAMS.valid_ranges,
                                      chip_size=256, stride=32, neg_min_proposals=(3, 3, 3))
    elif change == "epochs":
        kwargs["epochs"] = 3
    elif change == "seed":
        kwargs["seed"] = 9
    elif change == "data":
        moved = [dict(r) for r in records]
        moved[0] = dict(moved[0], boxes=moved[0]["boxes"] + 1)
        kwargs["records"] = moved
    else:
        box = np.array([[10, 10, 20, 20]] * 5, np.float32)
        kwargs["proposals"] = {records[0]["image_id"]: [box, box, box]}
    with caplog.at_level(logging.INFO, logger="sniper_d2.plans"):
        plan = load_or_build_plan(path, progress=False, **kwargs)
    assert "rebuilding the chip plan" in caplog.text and reason in caplog.text
    assert load_plan(path).config_hash == plan.config_hash
    assert plan.epochs == kwargs["epochs"]


def test_truncated_plan_is_detected_and_rebuilt(records, tmp_path, caplog):
    path = tmp_path / "p.npz"
    plan = load_or_build_plan(path, records, PARAMS, 2, 0, progress=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_plan(path)
    with caplog.at_level(logging.WARNING, logger="sniper_d2.plans"):
        rebuilt = load_or_build_plan(path, records, PARAMS, 2, 0, progress=False)
    assert "truncated or corrupt" in caplog.text
    np.testing.assert_array_equal(rebuilt.chips, plan.chips)
    load_plan(path)  # whole again


def test_foreign_or_inconsistent_files_are_refused(tmp_path):
    save_npz_artifact(tmp_path / "other.npz", "sniper_d2.proposals", 1, {}, {"boxes": np.zeros((1, 4))})
    with pytest.raises(ArtifactError, match="expected a 'sniper_d2.chip_plan' file"):
        load_plan(tmp_path / "other.npz")
    arrays = {k: np.zeros(3) for k in ("epoch", "image_index", "scale_index", "scale", "is_negative")}
    arrays["chips"] = np.zeros((2, 4), np.float32)
    header = {"epochs": 1, "config_hash": "x", "dataset_hash": "y", "num_chips": 3}
    save_npz_artifact(tmp_path / "bad.npz", plans.PLAN_FORMAT, plans.PLAN_VERSION, header, arrays)
    with pytest.raises(ArtifactError, match="disagree in length"):
        load_plan(tmp_path / "bad.npz")
    with pytest.raises(ArtifactError, match="not found"):
        load_plan(tmp_path / "missing.npz")


def test_params_hash_ignores_sampling_and_spelling_of_infinity():
    a = PARAMS
    b = PlanParams(scales=a.scales, valid_ranges=((0.0, 40.0), (24.0, 160.0), (128.0, float("inf"))),
                   chip_size=256, stride=32, neg_min_proposals=(3, 3, 3), neg_chips_per_image=7)
    assert a.hash() == b.hash()
    assert a.hash() != PlanParams(a.scales, a.valid_ranges, 256, 16, (3, 3, 3)).hash()


@pytest.mark.parametrize("kwargs, match", [
    (dict(valid_ranges=((0, 40),)), "one \\(lo, hi\\) range per scale"),
    (dict(neg_min_proposals=(1,)), "MIN_PROPOSALS"),
    (dict(scales=(2.0, 0.0, -1.0)), "neither a positive factor"),
    (dict(valid_ranges=((0, 40), (50, 50), (128, -1))), "is empty"),
    (dict(stride=0), "must be positive"),
])
def test_invalid_params_raise_naming_the_key(kwargs, match):
    fields = dict(scales=PARAMS.scales, valid_ranges=PARAMS.valid_ranges, chip_size=256, stride=32,
                  neg_min_proposals=(3, 3, 3))
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PlanParams(**fields)


def test_params_from_a_detectron2_config():
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg

    from sniper_d2.config import add_sniper_config

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "sniper_tiny_cpu.yaml"))
    params = PlanParams.from_cfg(cfg)
    assert params.scales == (2.0, 1.0, -1.0)
    assert params.valid_ranges[-1] == ValidRange(128.0, math.inf)
    assert params.valid_ranges[-1].to_cfg() == (128.0, -1.0)
    assert (params.chip_size, params.stride) == (256, 32)
    assert params.neg_chips_per_image == cfg.SNIPER.NEG.CHIPS_PER_IMAGE


def test_numpy_modules_do_not_import_torch():
    code = ("import sys, sniper_d2.chips, sniper_d2.stats, sniper_d2.plans; "
            "assert 'torch' not in sys.modules and 'detectron2' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_plan_chips_tool_writes_a_plan_and_overlays(tmp_path):
    pytest.importorskip("detectron2")
    json_path = write_coco(tmp_path / "data.json", num_images=3, empty=(), crowd_only=())
    out = tmp_path / "plans" / "plan.npz"
    cmd = [sys.executable, os.path.join(REPO, "tools", "plan_chips.py"), "--config-file",
           os.path.join(REPO, "configs", "sniper_tiny_cpu.yaml"), "--dataset-json", str(json_path),
           "--output", str(out), "--epochs", "2", "--num-workers", "0", "--draw", "2"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "positive" in result.stdout and "per image per epoch" in result.stdout
    plan = load_plan(out)
    assert plan.epochs == 2 and len(plan) > 0
    assert sorted(os.listdir(tmp_path / "plans" / "plan_overlays")) == ["1.png", "2.png"]


def test_degenerate_proposals_are_dropped_with_one_counting_warning(records, caplog):
    bad = np.array([[np.nan, 0, 5, 5], [10, 10, 10, 20], [-50, -50, -10, -10]], np.float32)
    proposals = {r["image_id"]: [bad, bad, bad] for r in records}
    with caplog.at_level(logging.WARNING):
        plan = build_plan(records, PARAMS, epochs=3, seed=0, proposals=proposals, progress=False)
    warnings = [m for m in caplog.messages if "dropped or clipped" in m]
    assert len(warnings) == 1
    n = len(records) * 3  # images x scales (cleaned once, not per epoch)
    assert f"{n} proposals with NaN/inf" in warnings[0] and f"{n} proposals of zero or negative size" in warnings[0]
    assert not plan.is_negative.any()
