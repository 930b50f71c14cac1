"""Size statistics and the derived SNIPER settings."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sniper_d2 import stats
from sniper_d2.config import FIT_SCALE, NO_UPPER_BOUND

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def record(i, h, w, boxes, crowd=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool)
    return {"image_id": i, "file_name": f"{i}.jpg", "height": h, "width": w, "boxes": boxes,
            "category_ids": np.ones(len(boxes), np.int64), "iscrowd": crowd}


def test_object_sizes_absolute_and_relative_without_crowd():
    recs = [record(1, 100, 400, [[0, 0, 10, 40], [5, 5, 25, 25]], crowd=[False, True]),
            record(2, 50, 50, []),
            record(3, 200, 200, [[0, 0, 50, 50]])]
    absolute, relative, image_index = stats.object_sizes(recs)
    np.testing.assert_allclose(absolute, [20.0, 50.0])
    np.testing.assert_allclose(relative, [20.0 / 200.0, 50.0 / 200.0])
    np.testing.assert_array_equal(image_index, [0, 2])


@settings(max_examples=60, deadline=None)
@given(st.floats(2.0, 60.0), st.floats(1.0, 3.0), st.integers(300, 8000),
       st.sampled_from([(32, 64, 128, 256, 512), (16, 32, 64, 128, 256), (8, 16, 32)]),
       st.sampled_from([128, 256, 512, 1024]))
def test_derived_ranges_are_ordered_overlapping_and_cover_all_sizes(median_px, sigma, long_side, anchors, chip):
    rng = np.random.default_rng(0)
    absolute = np.exp(rng.normal(np.log(median_px), sigma, 2000))
    sizes_hw = np.stack([rng.integers(long_side // 2, long_side + 1, 50), np.full(50, long_side)], 1)
    try:
        s = stats.suggest_sniper_params(absolute, sizes_hw, anchors, chip)
    except ValueError as e:  # a band narrower than 2x is refused, with a message
        assert "narrower than 2x" in str(e)
        return
    assert s.scales[-1] == FIT_SCALE
    fixed = np.array(s.scales[:-1])
    assert (np.diff(fixed) < 0).all() and (fixed > 0).all() and (fixed <= 4.0).all()
    assert len(s.valid_ranges) == len(s.scales) == len(s.neg_min_proposals) == len(s.test_scales)
    assert s.valid_ranges[0][0] == 0.0 and s.valid_ranges[-1][1] == NO_UPPER_BOUND
    for (lo0, hi0), (lo1, hi1) in zip(s.valid_ranges[:-1], s.valid_ranges[1:]):
        assert lo0 < lo1 < hi0  # neighbours overlap and move up
        assert hi1 == NO_UPPER_BOUND or hi0 < hi1
    for (lo, hi), (tlo, thi) in zip(s.valid_ranges, s.test_valid_ranges):
        # Test ranges sit below the training ranges (see stats.py), open above only at the top.
        assert tlo <= lo and (thi == NO_UPPER_BOUND if hi == NO_UPPER_BOUND else tlo < thi <= hi)
    assert s.test_valid_ranges[0][0] == 0.0
    for (_, thi0), (tlo1, _) in zip(s.test_valid_ranges[:-1], s.test_valid_ranges[1:]):
        assert tlo1 < thi0  # every object size is kept at some test scale
    band_lo, band_hi = s.band
    for scale, (lo, hi) in zip(fixed, s.valid_ranges):  # each range maps into the comfortable band
        assert hi * scale == pytest.approx(band_hi, rel=0.01)
        assert lo == 0.0 or lo * scale == pytest.approx(band_lo, rel=0.01)
    assert s.chip_size == chip and s.chip_stride % 8 == 0 and 0 < s.chip_stride < chip


def test_finest_scale_brings_small_objects_to_the_smallest_anchor():
    absolute = np.exp(np.random.default_rng(0).uniform(np.log(10), np.log(400), 5000))
    s = stats.suggest_sniper_params(absolute, [[1500, 2000]] * 10, (16, 32, 64, 128, 256), 256)
    p2 = np.percentile(absolute, 2)
    assert s.scales[0] == pytest.approx(16 / p2, rel=0.01)


def test_yaml_fragment_merges_into_a_detectron2_config_and_plans(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg

    from sniper_d2.config import add_sniper_config
    from sniper_d2.plans import PlanParams

    absolute = np.exp(np.random.default_rng(0).uniform(np.log(6), np.log(400), 500))
    s = stats.suggest_sniper_params(absolute, [[1500, 1800]] * 5, (16, 32, 64, 128, 256), 256)
    fragment = s.to_yaml()
    assert list(yaml.safe_load(fragment)) == ["SNIPER"]
    path = tmp_path / "fragment.yaml"
    path.write_text(f"_BASE_: \"{os.path.join(REPO, 'configs', 'sniper_tiny_cpu.yaml')}\"\n" + fragment)
    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(str(path))
    params = PlanParams.from_cfg(cfg)
    assert params.scales == tuple(s.scales)
    assert [list(r) for r in cfg.SNIPER.TEST.VALID_RANGES] == [list(r) for r in s.test_valid_ranges]
    assert cfg.SNIPER.CHIP_STRIDE == s.chip_stride


def test_read_config_yaml_follows_base_chain():
    cfg = stats.read_config_yaml(os.path.join(REPO, "configs", "faster_rcnn_tiny_cpu.yaml"))
    assert stats.config_value(cfg, "MODEL.ANCHOR_GENERATOR.SIZES") == [[16], [32], [64], [128], [256]]
    assert stats.config_value(cfg, "MODEL.META_ARCHITECTURE") == "GeneralizedRCNN"  # from the base's base
    assert stats.config_value(cfg, "SNIPER.ENABLED") is False  # the child wins
    assert stats.config_value(cfg, "SNIPER.SCALES") == (2.0, 1.0, -1.0)  # "(...)" strings evaluated
    assert stats.config_value(cfg, "SNIPER.MISSING", 7) == 7


def test_cost_estimate_counts_chips_and_compares_pixels():
    rng = np.random.default_rng(0)
    recs = []
    for i in range(20):
        xy = rng.uniform(0, 1500, (30, 2))
        wh = np.exp(rng.uniform(np.log(6), np.log(300), (30, 1)))
        recs.append(record(i, 1600, 1600, np.concatenate([xy, xy + wh], 1)))
    absolute, _, _ = stats.object_sizes(recs)
    s = stats.suggest_sniper_params(absolute, stats.image_sizes(recs), (16, 32, 64, 128, 256), 256)
    cost = stats.estimate_cost(recs, s, sample_images=10)
    assert cost["images"] == 10
    assert cost["chips_per_image"].shape == (len(s.scales),)
    assert cost["chips_per_image"][-1] == pytest.approx(1.0)  # one whole-image chip at FIT_SCALE
    assert cost["sniper"] == pytest.approx(cost["chips_per_image"].sum() * 256 ** 2)
    assert cost["pyramid"] > cost["single_scale_original"] == 1600 * 1600


def test_statistics_of_tens_of_thousands_of_images_take_seconds():
    rng = np.random.default_rng(0)
    recs = []
    for i in range(20000):
        xy = rng.uniform(0, 800, (20, 2))
        recs.append(record(i, 1000, 1000, np.concatenate([xy, xy + rng.uniform(2, 150, (20, 2))], 1)))
    start = time.perf_counter()
    absolute, relative, _ = stats.object_sizes(recs)
    s = stats.suggest_sniper_params(absolute, stats.image_sizes(recs))
    stats.size_summary(absolute, relative)
    stats.estimate_cost(recs, s, sample_images=100)
    assert len(absolute) == 400000
    assert time.perf_counter() - start < 10.0


def test_tool_prints_a_fragment_and_writes_the_histogram_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 1200, "width": 1600} for i in range(1, 6)]
    anns = []
    for i in range(1, 6):
        for _ in range(15):
            s = float(np.exp(rng.uniform(np.log(6), np.log(300))))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "bbox": [float(rng.uniform(0, 1200)), float(rng.uniform(0, 800)), s, s]})
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps({"images": images, "annotations": anns,
                                     "categories": [{"id": 1, "name": "x"}]}))
    out = tmp_path / "out"
    tool = os.path.join(REPO, "tools", "compute_scale_stats.py")
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code, tool, str(json_path), "--config",
                             os.path.join(REPO, "configs", "sniper_tiny_cpu.yaml"), "--output-dir", str(out)],
                            cwd=REPO, capture_output=True, text=True, check=True)
    fragment = result.stdout[result.stdout.index("SNIPER:"):]
    parsed = yaml.safe_load(fragment[: fragment.index("\n\n")])
    assert parsed["SNIPER"]["CHIP_SIZE"] == 256  # from the config
    assert parsed["SNIPER"]["SCALES"][-1] == -1.0
    assert "training pixels per image" in result.stdout
    assert (out / "size_histogram.png").read_bytes()[:4] == b"\x89PNG"
    saved = yaml.safe_load((out / "sniper_scales.yaml").read_text())
    assert saved["_BASE_"].endswith("sniper_tiny_cpu.yaml") and saved["SNIPER"] == parsed["SNIPER"]
