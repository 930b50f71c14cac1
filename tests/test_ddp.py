"""Two CPU processes (gloo) train the tiny SNIPER config through train_net.py."""

import json
import os
import subprocess
import sys

from conftest import ROOT, free_dist_url, tiny_cfg_opts


def test_two_process_cpu_training_runs_and_checkpoints(small_synthetic, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "train_net.py", "--config-file", "configs/sniper_tiny_cpu.yaml", "--num-gpus", "2",
           "--dist-url", free_dist_url(),
           *tiny_cfg_opts(small_synthetic, out), "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "4",
           "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert metrics and all(m["total_loss"] == m["total_loss"] for m in metrics if "total_loss" in m)
    assert "World size: 2" in proc.stdout + proc.stderr


def test_teardown_leaves_no_reference_to_a_destroyed_group():
    """A destroyed gloo group still referenced by detectron2's comm module is freed at interpreter
    exit, where its threads abort the worker (SIGABRT, about 1 run in 20): teardown drops them all."""
    import torch.distributed as dist
    from detectron2.utils import comm

    from sniper_d2.engine import _destroy_process_groups
    from conftest import free_dist_url

    dist.init_process_group(backend="gloo", init_method=free_dist_url(), world_size=1, rank=0)
    try:
        comm._LOCAL_PROCESS_GROUP = dist.new_group([0])
        comm._get_global_gloo_group()  # what comm.all_gather does first with more than one process
        assert comm._get_global_gloo_group.cache_info().currsize == 1
        _destroy_process_groups()
        assert not dist.is_initialized()
        assert comm._LOCAL_PROCESS_GROUP is None
        assert comm._get_global_gloo_group.cache_info().currsize == 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        comm._LOCAL_PROCESS_GROUP = None
