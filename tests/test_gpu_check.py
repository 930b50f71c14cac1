"""benchmarks/gpu_check.py: its CPU smoke mode runs every step (data, batch probe, training, tiled
inference, merge timing), so the GPU check is ready to run when a GPU is at hand."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_every_step_on_the_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--smoke",
                           "--output", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "chip batch 2" in out
    assert "training: 2 iterations, 2 chips of 256 px, AMP False" in out and "chips/s per GPU" in out
    assert "tiled inference: 1 images" in out and "images/s" in out
    assert "nms" in out and "nested_nms" in out and "soft_nms" in out
