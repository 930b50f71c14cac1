"""sniper_d2.cli: the project's own errors end a tool in one line; a library bug keeps its traceback."""

import pytest

from sniper_d2.cli import run_main
from sniper_d2.config import ConfigError


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
