"""Shared fixtures: a small synthetic data set (generated once per test session)."""

import os
import socket

import pytest

from sniper_d2.synthetic import SyntheticSpec, make_synthetic_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory):
    """{"train": json path, "val": json path, "root": folder}: 6 + 3 images of 400-700 px."""
    root = tmp_path_factory.mktemp("synthetic")
    common = dict(min_side_px=400, max_side_px=700, max_object_px=200.0, objects_per_image=(4, 8),
                  distractors_per_image=(2, 4))
    train = make_synthetic_dataset(str(root), "train", SyntheticSpec(num_images=6, seed=11, empty_fraction=0.2,
                                                                        **common), progress=False)
    val = make_synthetic_dataset(str(root), "val", SyntheticSpec(num_images=3, seed=12, empty_fraction=0.0,
                                                                    **common), progress=False)
    return {"train": train, "val": val, "root": str(root)}


def tiny_cfg_opts(data, output_dir):
    """Command-line overrides pointing configs/sniper_tiny_cpu.yaml at the small synthetic set."""
    return ["SNIPER.REGISTER_COCO",
            f'(("synthetic_train", "{data["train"]}", ""), ("synthetic_val", "{data["val"]}", ""))',
            "OUTPUT_DIR", str(output_dir)]


def free_dist_url():
    """A tcp:// init URL on a port that is free now, so that runs of the suite cannot collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"
