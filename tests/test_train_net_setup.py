"""train_net.py's set-up: clear errors for wrong config keys and wrong data paths."""

import os
import subprocess
import sys

import pytest

from sniper_d2.coco import DatasetError
from sniper_d2.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train_net  # noqa: E402


def _args(config_file, *opts):
    return train_net.default_argument_parser().parse_args(["--config-file", config_file, *opts])


def test_unknown_config_key_in_yaml_names_the_file_and_key(tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(f'_BASE_: "{ROOT}/configs/sniper_tiny_cpu.yaml"\nSNIPER:\n  CHIP_SIZEE: 256\n')
    with pytest.raises(ConfigError, match=r"typo\.yaml.*SNIPER\.CHIP_SIZEE"):
        train_net.setup(_args(str(cfg)))


def test_unknown_config_key_on_command_line_is_refused():
    with pytest.raises(ConfigError, match="SNIPER.SCALEZ"):
        train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "SNIPER.SCALEZ", "(1.0,)"))


def test_amp_without_cuda_is_refused_before_training(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="SOLVER.AMP.ENABLED needs a CUDA device"):
        train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "SOLVER.AMP.ENABLED", "True"))


def test_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        train_net.setup(_args("no_such.yaml"))


def test_missing_dataset_json_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "train.json"
    with pytest.raises(DatasetError, match=str(missing)):
        train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "OUTPUT_DIR", str(tmp_path / "out"),
                              "SNIPER.REGISTER_COCO", f'(("x_train", "{missing}", ""),)'))


def test_cli_reports_a_missing_data_path_without_a_deep_traceback(tmp_path):
    missing = tmp_path / "train.json"
    proc = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
         "OUTPUT_DIR", str(tmp_path / "out"), "SNIPER.REGISTER_COCO", f'(("x_train", "{missing}", ""),)'],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"json file {missing} not found" in proc.stderr
