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
