"""train_net.py's set-up: clear errors for wrong config keys and wrong data paths."""

import os
import subprocess
import sys

import pytest

from sniper_d2.coco import DatasetError
from sniper_d2.config_types import ConfigError

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


@pytest.mark.parametrize("old, new", [("SNIPER.TEST.MAX_DETECTIONS", "TEST.DETECTIONS_PER_IMAGE"),
                                      ("SNIPER.TEST.SCORE_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST")])
def test_a_key_that_moved_to_detectron2s_own_names_the_new_one(tmp_path, old, new):
    section, key = old.rsplit(".", 1)
    cfg = tmp_path / "old.yaml"
    cfg.write_text(f'_BASE_: "{ROOT}/configs/sniper_tiny_cpu.yaml"\nSNIPER:\n  TEST:\n    {key}: 0.5\n')
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/old\.yaml: {old} is no longer a key: set detectron2's {new} "):
        train_net.setup(_args(str(cfg)))
    with pytest.raises(ConfigError, match=rf"^command-line config override: {old} is no longer a key: .*{new}") as e:
        train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", old, "0.5"))
    assert "\n" not in str(e.value)


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


NO_DATA = ("SNIPER.REGISTER_COCO", "()", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")


def test_steps_follow_max_iter_when_only_max_iter_changes(tmp_path):
    cfg = train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "OUTPUT_DIR", str(tmp_path / "a"), *NO_DATA,
                                "SOLVER.MAX_ITER", "1200"))
    assert tuple(cfg.SOLVER.STEPS) == (960, 1120)  # the tiny config's (240, 280) of 300, scaled
    cfg = train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "OUTPUT_DIR", str(tmp_path / "b"), *NO_DATA,
                                "SOLVER.MAX_ITER", "1200", "SOLVER.STEPS", "(500,)"))
    assert tuple(cfg.SOLVER.STEPS) == (500,)  # given explicitly: kept
    child = tmp_path / "child.yaml"  # a file over a _BASE_ that changes only MAX_ITER
    child.write_text(f'_BASE_: "{ROOT}/configs/sniper_tiny_cpu.yaml"\nSOLVER:\n  MAX_ITER: 600\n')
    cfg = train_net.setup(_args(str(child), "OUTPUT_DIR", str(tmp_path / "c"), *NO_DATA))
    assert tuple(cfg.SOLVER.STEPS) == (480, 560)


def test_steps_past_max_iter_are_refused_in_one_line(tmp_path):
    from sniper_d2.config_types import ConfigError

    with pytest.raises(ConfigError, match=r"SOLVER.STEPS \(240, 280\) has steps at or past SOLVER.MAX_ITER 250"):
        train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "OUTPUT_DIR", str(tmp_path / "a"), *NO_DATA,
                              "SOLVER.MAX_ITER", "250", "SOLVER.STEPS", "(240, 280)"))


def test_plan_written_by_plan_chips_is_the_one_training_loads(small_synthetic, tmp_path, caplog):
    import logging
    import shlex

    from conftest import tiny_cfg_opts

    from sniper_d2.data.build import load_training_plan, training_records

    plan_file = tmp_path / "elsewhere" / "plan.npz"  # not where training looks by default
    opts = tiny_cfg_opts(small_synthetic, tmp_path / "out")
    proc = subprocess.run([sys.executable, "tools/plan_chips.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
                           "--dataset-json", small_synthetic["train"], "--output", str(plan_file), "--epochs", "3",
                           "--num-workers", "0", *opts], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = [line for line in proc.stdout.splitlines() if line.strip().startswith("python train_net.py")]
    assert len(command) == 1, proc.stdout
    argv = shlex.split(command[0])[2:]
    assert "SNIPER.PLAN.FILE" in argv and "SNIPER.PLAN.EPOCHS" in argv
    cfg = train_net.setup(train_net.default_argument_parser().parse_args(argv))
    before = plan_file.stat().st_mtime_ns
    logger = logging.getLogger("sniper_d2")  # detectron2's setup_logger stops its propagation
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="sniper_d2"):
            plan, _ = load_training_plan(cfg, training_records(cfg)[0])
    finally:
        logger.removeHandler(caplog.handler)
    assert plan.epochs == 3 and plan_file.stat().st_mtime_ns == before  # loaded, not rebuilt
    assert any(f"loaded chip plan {plan_file}" in m for m in caplog.messages)
    assert any(f"training on chip plan {plan_file} (SNIPER.PLAN.FILE)" in m for m in caplog.messages)


def test_a_very_short_schedule_keeps_only_the_steps_inside_it(tmp_path):
    cfg = train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "OUTPUT_DIR", str(tmp_path / "a"), *NO_DATA,
                                "SOLVER.MAX_ITER", "2"))
    assert tuple(cfg.SOLVER.STEPS) == ()  # (240, 280) of 300 -> (2, 2): at the end, so no LR drop
    cfg = train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", "OUTPUT_DIR", str(tmp_path / "b"), *NO_DATA,
                                "SOLVER.MAX_ITER", "4"))
    assert tuple(cfg.SOLVER.STEPS) == (3,)


def test_weights_that_are_not_a_checkpoint_are_refused_in_one_line(small_synthetic, tmp_path):
    from conftest import tiny_cfg_opts

    from sniper_d2.weights import WeightsError

    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    cfg = train_net.setup(_args(f"{ROOT}/configs/sniper_tiny_cpu.yaml", *tiny_cfg_opts(small_synthetic, tmp_path / "out"),
                                "MODEL.WEIGHTS", str(bad)))
    with pytest.raises(WeightsError, match=r"notes\.pth: not a checkpoint this torch can read \([^\n]*\)$"):
        train_net.Trainer(cfg).resume_or_load(resume=False)
