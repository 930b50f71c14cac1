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
