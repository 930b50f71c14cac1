"""sniper_d2.cli: the project's own errors end a tool in one line; a library bug keeps its traceback."""

import pytest

from sniper_d2.cli import run_main
from sniper_d2.config_types import ConfigError


def _raise(error):
    raise error


def test_a_user_error_exits_with_one_line_naming_the_program():
    with pytest.raises(SystemExit) as exit_info:
        run_main(_raise, "tool.py", ConfigError("cfg.yaml: unknown config key: SNIPER.X"))
    assert exit_info.value.code == "tool.py: error: cfg.yaml: unknown config key: SNIPER.X"


def test_a_missing_file_is_a_user_error():
    with pytest.raises(SystemExit, match="tool.py: error: no_such.json"):
        run_main(_raise, "tool.py", FileNotFoundError("no_such.json"))


def test_a_key_error_from_a_library_bug_keeps_its_traceback():
    with pytest.raises(KeyError, match="boxes"):
        run_main(_raise, "tool.py", KeyError("boxes"))


def test_parse_with_overrides_takes_config_keys_away_from_list_options(tmp_path, monkeypatch):
    import argparse

    from sniper_d2.cli import parse_with_overrides

    p = argparse.ArgumentParser()
    p.add_argument("--json", nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[])
    args = parse_with_overrides(p, ["--json", "a.json", "b.json", "SNIPER.TEST.MODE", "full", "MODEL.DEVICE", "cpu"])
    assert args.json == ["a.json", "b.json"] and args.opts == ["SNIPER.TEST.MODE", "full", "MODEL.DEVICE", "cpu"]
    args = parse_with_overrides(p, ["--seeds", "1", "2", "SNIPER.AUTOFOCUS.THRESHOLDS", "(0.5, 0.3, 0.0)"])
    assert args.seeds == [1, 2] and args.opts == ["SNIPER.AUTOFOCUS.THRESHOLDS", "(0.5, 0.3, 0.0)"]
    args = parse_with_overrides(p, ["--seeds", "1", "SEED", "3", "OUTPUT_DIR", "o"])  # top-level keys, no dot
    assert args.seeds == [1] and args.opts == ["SEED", "3", "OUTPUT_DIR", "o"]
    args = parse_with_overrides(p, ["--json", "IMG_0001.JPG", "SNIPER.TEST.MODE", "full"])  # not a config section
    assert args.json == ["IMG_0001.JPG"] and args.opts == ["SNIPER.TEST.MODE", "full"]
    args = parse_with_overrides(p, ["--json", "x.json"])
    assert args.json == ["x.json"] and args.opts == []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "TEST.JPG").write_bytes(b"")  # an existing file named like a key stays an input
    args = parse_with_overrides(p, ["--json", "TEST.JPG", "MODEL.DEVICE", "cpu"])
    assert args.json == ["TEST.JPG"] and args.opts == ["MODEL.DEVICE", "cpu"]
    with pytest.raises(SystemExit):  # a value that is not a key still reaches the option and fails there
        parse_with_overrides(p, ["--seeds", "1", "model.weights", "x"])


BLOCKER = """
import sys

class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"PIL", "torch", "detectron2", "cv2"}:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _Missing())
"""


def test_count_options_refuse_values_below_their_minimum():
    import argparse

    from sniper_d2.cli import count_arg

    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=count_arg(1))
    assert p.parse_args(["--epochs", "3"]).epochs == 3
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(SystemExit):
            p.parse_args(["--epochs", bad])


def test_a_path_through_a_file_is_a_user_error(tmp_path):
    import os

    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match=r"^tool.py: error: .*file"):
        run_main(os.makedirs, "tool.py", str(tmp_path / "file" / "sub"))


def test_planning_tools_answer_help_with_numpy_only(tmp_path):
    """plan_chips.py and compute_scale_stats.py --help on a Python without Pillow, torch, detectron2."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    for tool in ("tools/plan_chips.py", "tools/compute_scale_stats.py"):
        proc = subprocess.run([sys.executable, tool, "--help"], cwd=root, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr[-2000:]
    check = ("import sniper_d2.cli as c; assert 'sniper_d2.image_io' not in sys.modules; "
             "print(sorted(e.__name__ for e in c.user_errors() if e.__module__.startswith('sniper_d2')))")
    proc = subprocess.run([sys.executable, "-c", "import sys; " + check], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() == "['ArtifactError', 'ConfigError', 'DatasetError']", proc.stderr[-2000:]
