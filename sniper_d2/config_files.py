"""Reading detectron2 yaml config files without detectron2 or torch.

fvcore (torch-free) is the one ``_BASE_`` reader: :func:`read_config_yaml` is its
``CfgNode.load_yaml_with_base`` with two additions, a one-line error for a missing file or a loop in
the ``_BASE_`` chain, and :func:`config_chain`, the files of that chain in the order fvcore merges
them. Tools that run without torch (statistics, planning) read keys with :func:`config_value`; tools
with detectron2 use :func:`sniper_d2.cli.setup_cfg`, which reads the same files through the same
fvcore function.
"""

import ast
import os

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from .config_types import ConfigError

__all__ = ["require_config_file", "read_config_yaml", "config_chain", "config_value"]


def require_config_file(config_file):
    """Raise ``FileNotFoundError("config file <path> not found")`` unless ``config_file`` is a file:
    the one message of every config reader (:func:`sniper_d2.cli.setup_cfg`, :func:`read_config_yaml`)."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file} not found")


def _load(path):
    """(merged dict, chain list[str]): fvcore's merge of ``path`` over its ``_BASE_`` chain, and the
    files of that chain, bases first (each file after every file it inherits from)."""
    chain, open_files = [], []

    class _Recorder(_FvcoreCfgNode):
        # fvcore loads each base through ``cls.load_yaml_with_base``: this override sees every file
        # of the chain, refuses a loop (fvcore would recurse until RecursionError) and records it.
        @classmethod
        def load_yaml_with_base(cls, filename, allow_unsafe=False):
            filename = os.path.abspath(os.fspath(filename))
            if filename in open_files:
                raise ConfigError(f"{filename}: _BASE_ chain loops back to this file")
            require_config_file(filename)
            open_files.append(filename)
            try:
                merged = super().load_yaml_with_base(filename, allow_unsafe=allow_unsafe)
            except yaml.YAMLError as e:
                raise ConfigError(f"{filename}: not valid YAML: {e}") from e
            except TypeError as e:  # fvcore looks for _BASE_ in what the file holds
                raise ConfigError(f"{filename}: not a mapping of config keys (empty, or a list)") from e
            open_files.pop()
            chain.append(filename)
            return merged if merged is not None else {}

    return _Recorder.load_yaml_with_base(path), chain


def read_config_yaml(path):
    """A detectron2 yaml config as a nested dict, ``_BASE_`` chains merged (child wins), keys
    without defaults (fvcore's ``load_yaml_with_base``).

    Raises:
        FileNotFoundError: a file of the chain does not exist (one line naming it).
        ConfigError: the chain loops, or a file is not valid YAML.
    """
    return _load(path)[0]


def config_chain(path):
    """The files of ``path``'s ``_BASE_`` chain (absolute paths), bases first, ``path`` last."""
    return _load(path)[1]


def config_value(cfg_dict, dotted_key, default=None):
    """``cfg_dict["A"]["B"]`` for ``"A.B"``; strings such as ``"(1, 2)"`` are literal-evaluated."""
    node = cfg_dict
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    if isinstance(node, str):
        try:
            return ast.literal_eval(node)
        except (ValueError, SyntaxError):
            return node
    return node
