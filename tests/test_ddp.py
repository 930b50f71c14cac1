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


def test_a_user_error_in_the_cpu_workers_ends_the_program_in_one_line():
    cmd = [sys.executable, "train_net.py", "--config-file", "configs/sniper_tiny_cpu.yaml", "--num-gpus", "2",
           "--dist-url", free_dist_url(), "SNIPER.TEST.MAX_DETECTIONS", "100"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == ["train_net.py: error: command-line config override: SNIPER.TEST.MAX_DETECTIONS is no longer "
                      "a key: set detectron2's TEST.DETECTIONS_PER_IMAGE instead"]


WORKER_SCRIPT = """
import sys
from detectron2.utils import comm
from sniper_d2.engine import launch_cpu

def work(out):
    ranks = comm.all_gather(comm.get_rank())  # fills detectron2's cached world group
    print(f"rank {comm.get_rank()} of {comm.get_world_size()}, local size {comm.get_local_size()}, saw {ranks}")
    if comm.is_main_process():
        open(out, "w").write("done")

if __name__ == "__main__":
    launch_cpu(work, 2, sys.argv[1], args=(sys.argv[2],))
"""


def test_cpu_workers_gather_and_leave_with_their_output_flushed(tmp_path):
    """The workers gather through detectron2's comm (local size = world size on one machine), then
    end without the interpreter teardown that could abort them; what they printed is not lost."""
    script = tmp_path / "workers.py"
    script.write_text(WORKER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), free_dist_url(), str(tmp_path / "done")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank} of 2, local size 2, saw [0, 1]" in proc.stdout
    assert (tmp_path / "done").read_text() == "done"
