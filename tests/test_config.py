"""sniper_d2.config_types: scales and valid ranges decoded once ("-1" = fit / no upper bound);
sniper_d2.config_files: config files read through fvcore's one ``_BASE_`` reader."""

import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sniper_d2.coco import crowd_flags, non_crowd_boxes
from sniper_d2.config_files import config_value, read_config_yaml
from sniper_d2.config_types import FIT_SCALE, ConfigError, ValidRange, is_fit, parse_scales

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_minus_one_upper_bound_parses_to_infinity_and_back():
    r = ValidRange.parse((120, -1))
    assert r == ValidRange(120.0, math.inf) and r.to_cfg() == (120.0, -1.0)
    assert ValidRange.parse((0, None)).hi == math.inf
    assert ValidRange.parse(r) is r


def test_training_range_is_lo_inclusive_hi_exclusive_and_test_range_the_opposite():
    r = ValidRange(32.0, 150.0)
    sizes = np.array([31.9, 32.0, 100.0, 150.0, 150.1])
    np.testing.assert_array_equal(r.train_mask(sizes), [False, True, True, False, False])
    np.testing.assert_array_equal(r.test_mask(sizes), [False, False, True, True, False])


def test_an_open_range_keeps_every_large_size():
    r = ValidRange.parse((10, -1))
    assert r.train_mask(np.array([1e9])).all() and r.test_mask(np.array([1e9])).all()


@given(st.floats(0, 1e4), st.floats(0.01, 1e4), st.lists(st.floats(0, 2e4), max_size=20))
def test_masks_are_the_two_half_open_intervals(lo, width, sizes):
    r, s = ValidRange(lo, lo + width), np.array(sizes, np.float64)
    np.testing.assert_array_equal(r.train_mask(s), (s >= r.lo) & (s < r.hi))
    np.testing.assert_array_equal(r.test_mask(s), (s > r.lo) & (s <= r.hi))


@pytest.mark.parametrize("pair", [(50, 50), (60, 40), (-1, 10), (float("nan"), 10), ("a", 3), (1,)])
def test_empty_negative_or_malformed_ranges_are_config_errors(pair):
    with pytest.raises(ConfigError):
        ValidRange.parse(pair)


def test_fit_scale_is_the_only_negative_scale():
    assert is_fit(FIT_SCALE) and is_fit(-1) and not is_fit(1.0)
    scales, ranges = parse_scales((3, 1.667, -1), ((0, 80), (32, 150), (120, -1)))
    assert scales == (3.0, 1.667, -1.0) and ranges[-1] == ValidRange(120.0)
    with pytest.raises(ConfigError, match="SNIPER.TEST.SCALES entry -2.0"):
        parse_scales((-2,), ((0, -1),), "SNIPER.TEST")
    with pytest.raises(ConfigError, match="one \\(lo, hi\\) range per scale"):
        parse_scales((1.0, -1), ((0, -1),))
    with pytest.raises(ConfigError, match="SNIPER.VALID_RANGES.*empty"):
        parse_scales((1.0,), ((5, 5),))


def test_non_crowd_boxes_leave_out_crowd_boxes():
    rec = {"boxes": np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]], np.float32),
           "iscrowd": np.array([False, True, False])}
    np.testing.assert_array_equal(non_crowd_boxes(rec), rec["boxes"][[0, 2]])
    assert len(non_crowd_boxes({"boxes": rec["boxes"]})) == 3
    assert crowd_flags({"boxes": np.zeros((0, 4))}).shape == (0,)


def test_both_config_readers_name_a_missing_file_the_same_way(tmp_path):
    missing = str(tmp_path / "no_such.yaml")
    with pytest.raises(FileNotFoundError, match=f"config file {missing} not found"):
        read_config_yaml(missing)
    loop = tmp_path / "loop.yaml"
    loop.write_text("_BASE_: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        read_config_yaml(str(loop))


def test_read_config_yaml_follows_base_chain():
    cfg = read_config_yaml(os.path.join(REPO, "configs", "faster_rcnn_tiny_cpu.yaml"))
    assert config_value(cfg, "MODEL.ANCHOR_GENERATOR.SIZES") == [[16], [32], [64], [128], [256]]
    assert config_value(cfg, "MODEL.META_ARCHITECTURE") == "GeneralizedRCNN"  # from the base's base
    assert config_value(cfg, "SNIPER.ENABLED") is False  # the child wins
    assert config_value(cfg, "SNIPER.SCALES") == (2.0, 1.0, -1.0)  # "(...)" strings evaluated
    assert config_value(cfg, "SNIPER.MISSING", 7) == 7


def test_config_chain_lists_the_bases_first_and_an_empty_file_is_one_line_error(tmp_path):
    from sniper_d2.config_files import config_chain

    (tmp_path / "base.yaml").write_text("SOLVER:\n  MAX_ITER: 10\n")
    (tmp_path / "mid.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.1\n")
    (tmp_path / "top.yaml").write_text("_BASE_: mid.yaml\nSOLVER:\n  MAX_ITER: 20\n")
    assert [os.path.basename(p) for p in config_chain(str(tmp_path / "top.yaml"))] == ["base.yaml", "mid.yaml",
                                                                                         "top.yaml"]
    assert read_config_yaml(str(tmp_path / "top.yaml"))["SOLVER"] == {"MAX_ITER": 20, "BASE_LR": 0.1}
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty.yaml: not a mapping"):
        read_config_yaml(str(tmp_path / "empty.yaml"))
    (tmp_path / "bad.yaml").write_text("SOLVER: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_config_yaml(str(tmp_path / "bad.yaml"))


def test_reading_a_config_file_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; from sniper_d2.config_files import read_config_yaml; "
            f"read_config_yaml({os.path.join(REPO, 'configs', 'sniper_tiny_cpu.yaml')!r}); "
            "assert 'torch' not in sys.modules and 'detectron2' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
