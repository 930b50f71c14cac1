"""Start-up fails fast: a wrong class count or data path is among the first lines printed, in one line;
the environment and config dump go to the log file only, without colour codes."""

import subprocess
import sys

from conftest import ROOT, tiny_cfg_opts

TRAIN = [sys.executable, "train_net.py", "--config-file", "configs/sniper_tiny_cpu.yaml"]


def _run(argv, timeout=120):
    """Run a command with stderr merged into stdout, in the order the user sees them."""
    return subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def _first_lines(proc, n=8):
    """The first lines printed (library import warnings, detectron2's "Command Line Args", then ours)."""
    return proc.stdout.strip().splitlines()[:n]


def test_wrong_num_classes_is_one_of_the_first_lines(small_synthetic, tmp_path):
    proc = _run(TRAIN + [*tiny_cfg_opts(small_synthetic, tmp_path / "out"), "MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    assert proc.returncode != 0
    expected = (f"train_net.py: error: MODEL.ROI_HEADS.NUM_CLASSES is 5 but data set 'synthetic_train' "
                f"({small_synthetic['train']}) has 3 categories: set MODEL.ROI_HEADS.NUM_CLASSES 3")
    assert expected in _first_lines(proc), _first_lines(proc, 12)
    assert "Environment info" not in proc.stdout


def test_eval_only_checks_the_test_sets(small_synthetic, tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"")
    proc = _run(TRAIN + ["--eval-only", *tiny_cfg_opts(small_synthetic, tmp_path / "out"), "DATASETS.TRAIN", "()",
                         "MODEL.ROI_HEADS.NUM_CLASSES", "1", "MODEL.WEIGHTS", str(weights)])
    assert proc.returncode != 0
    assert any("data set 'synthetic_val'" in line and "has 3 categories" in line for line in _first_lines(proc))


def test_missing_json_is_one_of_the_first_lines(tmp_path):
    missing = tmp_path / "nowhere" / "train.json"
    proc = _run(TRAIN + ["OUTPUT_DIR", str(tmp_path / "out"), "SNIPER.REGISTER_COCO", f'(("x_train", "{missing}", ""),)',
                         "DATASETS.TRAIN", '("x_train",)'])
    assert proc.returncode != 0
    assert any(f"json file {missing} not found" in line for line in _first_lines(proc)), _first_lines(proc, 12)


def test_unregistered_data_set_is_named(small_synthetic, tmp_path):
    proc = _run(TRAIN + [*tiny_cfg_opts(small_synthetic, tmp_path / "out"), "DATASETS.TRAIN", '("mine_train",)'])
    assert proc.returncode != 0
    assert any("DATASETS.TRAIN names data set 'mine_train', which is not registered" in line
               for line in _first_lines(proc)), _first_lines(proc, 12)


def test_config_dump_goes_to_the_log_file_without_colour_codes(small_synthetic, tmp_path):
    out = tmp_path / "out"
    proc = _run(TRAIN + [*tiny_cfg_opts(small_synthetic, out), "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()",
                         "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "1"], timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Environment info" not in proc.stdout and "Running with full config" not in proc.stdout
    assert "\x1b[" not in proc.stdout  # not a terminal: no colour codes
    log = (out / "log.txt").read_text()
    assert "Environment info" in log and "Running with full config" in log and "CHIP_SIZE: 256" in log
    assert "\x1b[" not in log
