"""Planning in several processes: shares joined in order, and two CPU processes (gloo) that plan
a data set together hold, and write, the plan one process builds."""

import os

import numpy as np
import pytest

from conftest import free_dist_url
from sniper_d2.plans import PlanParams, build_plan, load_plan, merge_plans

PARAMS = PlanParams(scales=(2.0, 1.0, -1.0), valid_ranges=((0.0, 40.0), (24.0, 160.0), (128.0, -1.0)),
                    chip_size=256, stride=32, neg_min_proposals=(2, 2, 2))
ARRAYS = ("epoch", "image_index", "scale_index", "scale", "chips", "is_negative")


def make_records(num_images=9, seed=0):
    """Records of 300-1500 px images with 0-20 boxes of 4-300 px, and proposals for every third image."""
    rng = np.random.default_rng(seed)
    records, proposals = [], {}
    for i in range(num_images):
        h, w = (int(v) for v in rng.integers(300, 1500, 2))
        n = int(rng.integers(0, 20))
        s = np.exp(rng.uniform(np.log(4), np.log(300), (n, 2)))
        xy = rng.uniform(0, 1, (n, 2)) * ([w, h] - s)
        records.append({"image_id": i + 100, "height": h, "width": w, "iscrowd": rng.random(n) < 0.1,
                        "boxes": np.concatenate([xy, xy + s], 1).astype(np.float32)})
        if i % 3 == 0:
            xy = rng.uniform(0, 1, (30, 2)) * [w - 20, h - 20]
            clutter = np.concatenate([xy, xy + 15], 1).astype(np.float32)
            proposals[i + 100] = [clutter, clutter, None]
    return records, proposals


def assert_same_plan(a, b):
    for k in ARRAYS:
        assert getattr(a, k).dtype == getattr(b, k).dtype, k
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert (a.epochs, a.config_hash, a.dataset_hash) == (b.epochs, b.config_hash, b.dataset_hash)


@pytest.mark.parametrize("world", [1, 2, 3, 12])
def test_shares_joined_equal_the_one_process_plan(world):
    records, proposals = make_records()
    whole = build_plan(records, PARAMS, epochs=3, seed=7, proposals=proposals, progress=False)
    assert whole.is_negative.any() and (~whole.is_negative).any()
    shares = [build_plan(records, PARAMS, epochs=3, seed=7, proposals=proposals, progress=False, shard=(r, world))
              for r in range(world)]
    for r, share in enumerate(shares):
        assert (share.image_index % world == r).all()
    assert_same_plan(merge_plans(shares), whole)


def test_images_planned_together_or_one_by_one_give_the_same_plan(monkeypatch):
    from sniper_d2 import plans

    records, proposals = make_records(12, seed=3)
    together = build_plan(records, PARAMS, epochs=3, seed=7, proposals=proposals, progress=False)
    monkeypatch.setattr(plans, "_MAX_IMAGES_PER_CHUNK", 1)
    alone = build_plan(records, PARAMS, epochs=3, seed=7, proposals=proposals, progress=False)
    assert together.is_negative.any()
    assert_same_plan(alone, together)


def test_shares_of_other_settings_are_refused():
    records, _ = make_records(4)
    a = build_plan(records, PARAMS, epochs=2, seed=0, progress=False, shard=(0, 2))
    b = build_plan(records, PARAMS, epochs=2, seed=1, progress=False, shard=(1, 2))
    with pytest.raises(ValueError, match="shares disagree"):
        merge_plans([a, b])
    with pytest.raises(ValueError, match="rank"):
        build_plan(records, PARAMS, epochs=2, seed=0, progress=False, shard=(2, 2))


def _plan_in_this_process(path, out_dir):
    """Run in each of the CPU processes: build (no file yet), then load (the file matches)."""
    from detectron2.utils import comm

    from sniper_d2.data.plan_sharing import load_or_build_plan_distributed

    records, proposals = make_records()
    for step in ("built", "loaded"):
        plan = load_or_build_plan_distributed(path, records, PARAMS, 3, 7, proposals=proposals, progress=False)
        np.savez(os.path.join(out_dir, f"{step}_rank{comm.get_rank()}.npz"), **{k: getattr(plan, k) for k in ARRAYS})


def test_two_processes_plan_their_shares_and_all_hold_the_one_process_plan(tmp_path):
    pytest.importorskip("detectron2")
    from sniper_d2.engine import launch_cpu

    path = str(tmp_path / "plan.npz")
    launch_cpu(_plan_in_this_process, 2, free_dist_url(), args=(path, str(tmp_path)))
    records, proposals = make_records()
    whole = build_plan(records, PARAMS, epochs=3, seed=7, proposals=proposals, progress=False)
    assert_same_plan(load_plan(path), whole)  # written once, by rank 0
    for step in ("built", "loaded"):
        for rank in (0, 1):
            got = np.load(tmp_path / f"{step}_rank{rank}.npz")
            for k in ARRAYS:
                np.testing.assert_array_equal(got[k], getattr(whole, k), err_msg=f"{step}, rank {rank}: {k}")
