"""Plain slicing as a plan mode (SNIPER.PLAN.MODE "sliced"), its config, and the recommendation."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT, tiny_cfg_opts
from hypothesis import given, settings
from hypothesis import strategies as st

from sniper_d2.config_types import ConfigError, ValidRange
from sniper_d2.plans import PlanParams, build_plan
from sniper_d2.recommend import data_case, data_traits, recommend


def _record(h, w, boxes=()):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {"image_id": 1, "height": h, "width": w, "boxes": boxes, "iscrowd": np.zeros(len(boxes), np.int64),
            "category_ids": np.ones(len(boxes), np.int64), "distractors": np.zeros((0, 4))}


def _sliced(scales=(1.0,), chip=256, overlap=0.2):
    return PlanParams(scales=scales, valid_ranges=((0.0, 40.0),) * len(scales), chip_size=chip, stride=32,
                      mode="sliced", slice_overlap=overlap)


def _axis_intervals(lo, hi):
    return sorted(set(zip(lo.tolist(), hi.tolist())))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(20, 1500), w=st.integers(20, 1500), scale=st.floats(0.25, 3.0),
       chip=st.sampled_from([64, 128, 256]), overlap=st.floats(0.0, 0.6))
def test_grid_plan_covers_every_pixel_with_the_stated_overlap(h, w, scale, chip, overlap):
    params = _sliced((scale,), chip, overlap)
    plan = build_plan([_record(h, w)], params, epochs=1, seed=0, progress=False)
    chips = plan.chips.astype(np.float64)
    assert len(chips) and (chips[:, :2] >= 0).all() and (chips[:, 2] <= w).all() and (chips[:, 3] <= h).all()
    # At most one chip, scaled (+ half a pixel: the last window ends at the image border, round(W s) / s).
    assert ((chips[:, 2:] - chips[:, :2]) * scale <= chip + 0.5 + 1e-3).all()
    overlap_px = round(overlap * chip) / scale  # original pixels
    for lo, hi, extent in ((chips[:, 0], chips[:, 2], w), (chips[:, 1], chips[:, 3], h)):
        intervals = _axis_intervals(lo, hi)
        assert intervals[0][0] == 0 and intervals[-1][1] == extent  # both borders reached
        for (a0, a1), (b0, b1) in zip(intervals, intervals[1:]):
            assert a1 - b0 >= overlap_px - 1e-3  # neighbours overlap by the stated amount (no gap)
    # The grid is the product of its column and row intervals: every pixel lies in some chip.
    assert len(chips) == len(_axis_intervals(chips[:, 0], chips[:, 2])) * len(_axis_intervals(chips[:, 1], chips[:, 3]))


def test_every_tile_every_epoch_background_included_and_nothing_negative():
    records = [_record(600, 900, [[10, 10, 60, 60]]), _record(300, 200)]  # the second image has no object
    plan = build_plan(records, _sliced((1.0, 0.5)), epochs=3, seed=0, progress=False)
    assert not plan.is_negative.any()
    per_epoch = [plan.chips[plan.epoch == e] for e in range(3)]
    assert all(np.array_equal(per_epoch[0], p) for p in per_epoch[1:])
    assert set(plan.image_index.tolist()) == {0, 1}  # the empty image is trained too
    # 900x600 at 1x, 256 px tiles overlapping >= 51 px: 5 columns x 3 rows; 0.5x: 2 x 2; 200x300 at 1x: 1 x 2,
    # at 0.5x: one tile.
    assert (plan.epoch == 0).sum() == 15 + 4 + 2 + 1


def test_sliced_mode_makes_every_size_valid_and_keeps_sniper_hashes():
    sliced = _sliced((1.0,))
    assert sliced.valid_ranges == (ValidRange(0.0),)
    sniper = PlanParams(scales=(1.0,), valid_ranges=((0.0, 40.0),), chip_size=256, stride=32)
    assert "mode" not in sniper.planning_dict() and sniper.hash() != sliced.hash()
    with pytest.raises(ConfigError, match="PLAN.MODE"):
        PlanParams(scales=(1.0,), valid_ranges=((0.0, 40.0),), chip_size=256, stride=32, mode="tiles")
    with pytest.raises(ConfigError, match="SLICE_OVERLAP"):
        _sliced(overlap=1.0)


def test_objects_cut_below_min_visible_fraction_are_ignored_and_big_ones_valid():
    pytest.importorskip("detectron2")
    from sniper_d2.data.mapper import chip_targets

    # One 512x256 image at 1x, 256 px tiles without overlap: tiles [0, 256) and [256, 512).
    boxes = [[20, 20, 220, 220],    # 200 px, far outside the config's (0, 40) range: valid when slicing
             [226, 100, 276, 150],  # cut by the tile border, 30 of 50 px inside the first tile (60%): valid
             [246, 10, 296, 60]]    # 10 of 50 px inside the first tile (20%): ignored there
    params = _sliced((1.0,), overlap=0.0)
    plan = build_plan([_record(256, 512, boxes)], params, epochs=1, seed=0, progress=False)
    first = int(np.flatnonzero(plan.chips[:, 0] == 0)[0])
    keep, _, valid = chip_targets(np.asarray(boxes, np.float32), np.zeros(3, bool), tuple(plan.chips[first, :2]),
                                  float(plan.scale[first]), (256, 256),
                                  params.valid_ranges[plan.scale_index[first]], 0.5)
    assert keep.all() and valid.tolist() == [True, True, False]


def test_data_traits_count_background_tiles_and_objects_in_band():
    # 512x512 at 1x, 256 px tiles, no overlap: 4 tiles; objects only in the top-left one.
    rec = _record(512, 512, [[10, 10, 42, 42], [100, 100, 164, 164], [20, 150, 220, 250]])
    traits = data_traits([rec], band=(16, 128), slice_scale=1.0, chip_size=256, overlap=0.0)
    assert traits["tiles_per_image"] == 4 and traits["background_tile_fraction"] == 0.75
    assert traits["objects_per_tile"] == 3
    assert traits["in_band_fraction"] == pytest.approx(2 / 3)  # sqrt(200 * 100) = 141 px is above 128
    assert data_case(traits) == "multi-band"
    assert data_case(dict(traits, in_band_fraction=0.95)) == "one band"


def test_recommendation_follows_the_measured_winner_of_the_same_case():
    one_band = {"in_band_fraction": 0.97, "size_spread": 6.0, "band_width": 8.0, "background_tile_fraction": 0.1,
                "tiles_per_image": 9.0, "objects_per_tile": 5.0, "images": 4}
    ap = lambda m, s: {"mean": m, "std": s, "n": 3}  # noqa: E731
    measured = {"synthetic": {"case": "multi-band", "AP": {"sniper": ap(30, 1), "sliced": ap(20, 1)}},
                "dense": {"case": "one band", "AP": {"sniper": ap(40, 1), "sliced": ap(45, 2), "baseline": ap(30, 1)}}}
    method, lines = recommend(one_band, measured)
    assert method == "sliced" and "sliced.yaml first" in lines[-1] and "'dense'" in " ".join(lines)
    method, _ = recommend(dict(one_band, in_band_fraction=0.5), measured)
    assert method == "sniper"
    # The measured winner decides, whatever the traits alone would say.
    measured["dense"]["AP"]["sniper"] = ap(50, 1)
    assert recommend(one_band, measured)[0] == "sniper"


def test_recommendation_without_figures_follows_the_traits():
    traits = {"in_band_fraction": 0.97, "size_spread": 6.0, "band_width": 8.0, "background_tile_fraction": 0.1,
              "tiles_per_image": 9.0, "objects_per_tile": 5.0, "images": 4}
    assert recommend(traits)[0] == "sliced"
    assert recommend(dict(traits, background_tile_fraction=0.8))[0] == "sniper"
    method, lines = recommend(dict(traits, in_band_fraction=0.4))
    assert method == "sniper" and "no benchmarked data set" in " ".join(lines)


def test_sliced_config_is_written_and_trains_and_evaluates(small_synthetic, tmp_path):
    pytest.importorskip("detectron2")
    out = tmp_path / "cfgs"
    proc = subprocess.run([sys.executable, "tools/compute_scale_stats.py", small_synthetic["train"], "--val-json",
                           small_synthetic["val"], "--config", os.path.join(ROOT, "configs", "sniper_tiny_cpu.yaml"),
                           "--output-dir", str(out), "--name", "synthetic", "--evidence", ""],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SNIPER or slicing?" in proc.stdout and "first" in proc.stdout.split("SNIPER or slicing?")[1]
    sliced = yaml.safe_load((out / "sliced.yaml").read_text())["SNIPER"]
    sniper = yaml.safe_load((out / "sniper.yaml").read_text())["SNIPER"]
    assert sliced["PLAN"]["MODE"] == "sliced" and len(sliced["SCALES"]) == 1
    assert sliced["TEST"]["SCALES"] == sliced["SCALES"] and sliced["CHIP_SIZE"] == sniper["CHIP_SIZE"]
    assert sliced["TEST"]["TILE_SIZE"] == sliced["CHIP_SIZE"] and sliced["TEST"]["VALID_RANGES"] == [[0.0, -1.0]]
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "train_net.py", "--config-file", str(out / "sliced.yaml"), "--num-gpus",
                           "1", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
                           "SOLVER.IMS_PER_BATCH", "2", *tiny_cfg_opts(small_synthetic, run)[2:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from sniper_d2.results import load_eval_results

    results = load_eval_results(str(run / "eval_results.json"))
    assert math.isfinite(results["synthetic_val"]["bbox"]["AP"])
    from sniper_d2.io import load_npz_artifact
    from sniper_d2.plans import PLAN_FORMAT, PLAN_VERSION

    header, _ = load_npz_artifact(str(next(run.glob("chip_plan_*.npz"))), PLAN_FORMAT, PLAN_VERSION)
    assert header["params"]["mode"] == "sliced"
