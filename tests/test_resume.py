"""Exact resume: the chips of iterations k..k+m are the same with and without an interruption at k."""

import itertools
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg

from conftest import ROOT, tiny_cfg_opts
from sniper_d2.config import add_sniper_config
from sniper_d2.data.build import build_sniper_train_loader
from sniper_d2.data.datasets import register_datasets_from_cfg


class ChipIdentity:
    """A mapper stand-in that returns what identifies a chip (cheap: no image decoding)."""

    def __call__(self, d):
        return (d["image_id"], tuple(round(v, 3) for v in d["chip"]), d["scale_index"])


def _cfg(small_synthetic, tmp_path, workers):
    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"))
    cfg.merge_from_list(tiny_cfg_opts(small_synthetic, tmp_path) + ["DATALOADER.NUM_WORKERS", str(workers),
                                                                     "SOLVER.IMS_PER_BATCH", "3"])
    register_datasets_from_cfg(cfg)
    return cfg


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumed_at_k_yields_the_same_chips(small_synthetic, tmp_path, workers):
    cfg = _cfg(small_synthetic, tmp_path, workers)
    full = list(itertools.islice(iter(build_sniper_train_loader(cfg, ChipIdentity(), start_iter=0)), 40))
    for k in (7, 23):
        resumed = list(itertools.islice(iter(build_sniper_train_loader(cfg, ChipIdentity(), start_iter=k)), 40 - k))
        assert resumed == full[k:]
    # Over 40 iterations the stream crossed an epoch boundary: chips repeat with fresh order.
    assert len(set(itertools.chain.from_iterable(full))) < 40 * 3


def test_train_net_resume_continues_from_the_checkpoint(small_synthetic, tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "train_net.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
            *tiny_cfg_opts(small_synthetic, out), "DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "2",
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2"]
    first = subprocess.run(base + ["SOLVER.MAX_ITER", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(base[:4] + ["--resume"] + base[4:] + ["SOLVER.MAX_ITER", "4"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    log = second.stdout + second.stderr
    assert "Starting training from iteration 2" in log
    assert "starting at iteration 2" in log  # the chip stream was rebuilt at the resume point
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert state["iteration"] == 3


def test_resumable_loader_builds_at_the_start_iteration_given_before_the_first_batch():
    from sniper_d2.data.build import ResumableTrainLoader

    built = []

    def build(start_iter):
        built.append(start_iter)
        return iter(range(start_iter, start_iter + 3))

    loader = ResumableTrainLoader(build)
    batches = iter(loader)  # what detectron2's trainer does when it is constructed
    assert built == []
    loader.start_at(5)
    assert next(batches) == 5 and built == [5]
    with pytest.raises(RuntimeError, match="before the first batch"):
        loader.start_at(0)
