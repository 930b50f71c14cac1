"""We use detectron2, torch and tifffile through their public APIs only: no ``obj._name`` on their
modules, classes or objects, no ``getattr(obj, "_name")`` and no ``from lib import _name``.

How their objects are told apart from ours, per file: the names bound by ``import`` / ``from ...
import`` of those libraries (``comm``, ``torch``, ``GeneralizedRCNN``, ``dist``, ...). An attribute
access whose leftmost name is one of them is theirs; ``self._x`` / ``super()._x`` and our own
modules' helpers are ours.
"""

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARIES = ("detectron2", "torch", "tifffile", "rasterio")
PRIVATE = re.compile(r"^_[A-Za-z0-9]")  # _name, _NAME; not __dunder__

# Private uses that another change removes. Remove an entry when that change lands.
PENDING = set()
# detectron2's compiled extension: whether this install has it (and its COCOevalAccumulate) is only
# known by importing it, as detectron2 itself does (sniper_d2.inference.evaluation.has_fast_coco_eval).
ALLOWED = {("sniper_d2/inference/evaluation.py", "_C")}


def _python_files():
    paths = [os.path.join(REPO, "train_net.py")]
    for top in ("sniper_d2", "tools"):
        for folder, _, names in os.walk(os.path.join(REPO, top)):
            paths += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return paths


def _is_library(module):
    return bool(module) and module.split(".")[0] in LIBRARIES


def _library_names(tree):
    """Names bound to a library module or to something imported from one, anywhere in the file."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _is_library(a.name):
                    names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_library(node.module):
            names.update(a.asname or a.name for a in node.names)
    return names


def _root_name(node):
    """The leftmost name of ``a.b.c`` / ``a.b().c`` / ``a[0].c``; None for anything else."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_uses(source, filename="<source>"):
    """``[(line, private name)]``: private attributes of detectron2 / torch / tifffile used in ``source``."""
    tree = ast.parse(source, filename)
    libs = _library_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_library(node.module):
            found += [(node.lineno, a.name) for a in node.names if PRIVATE.match(a.name)]
            found += [(node.lineno, part) for part in node.module.split(".") if PRIVATE.match(part)]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, part) for a in node.names if _is_library(a.name)
                      for part in a.name.split(".") if PRIVATE.match(part)]
        elif isinstance(node, ast.Attribute) and PRIVATE.match(node.attr) and _root_name(node.value) in libs:
            found.append((node.lineno, node.attr))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and PRIVATE.match(node.args[1].value) and _root_name(node.args[0]) in libs):
            found.append((node.lineno, node.args[1].value))
    return found


def test_the_checker_sees_each_way_of_reaching_a_private_name():
    source = "\n".join([
        "import torch",
        "import torch.distributed as dist",
        "from detectron2.utils import comm",
        "from detectron2.modeling import GeneralizedRCNN",
        "from detectron2.engine.launch import _find_free_port",
        "comm._LOCAL_PROCESS_GROUP = None",
        "GeneralizedRCNN._postprocess(a, b, c)",
        "dist.distributed_c10d._get_default_store()",
        "getattr(torch.cpu, '_is_amx_tile_supported', None)",
        "comm._get_global_gloo_group.cache_clear()",
    ])
    assert sorted(name for _, name in private_uses(source)) == sorted([
        "_find_free_port", "_LOCAL_PROCESS_GROUP", "_postprocess", "_get_default_store",
        "_is_amx_tile_supported", "_get_global_gloo_group"])


def test_the_checker_leaves_our_own_private_names_alone():
    source = "\n".join([
        "import torch",
        "from detectron2.modeling.proposal_generator import RPN",
        "from .folder import _Progress",
        "class SniperRPN(RPN):",
        "    def f(self):",
        "        self._cache = torch.zeros(1)",
        "        return super()._helper(self._cache), _Progress()._show(1)",
        "decode_args = {'_fullsize': True}",
    ])
    assert private_uses(source) == []


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_no_private_attribute_of_detectron2_torch_or_tifffile(path):
    rel = os.path.relpath(path, REPO)
    with open(path) as f:
        uses = [(line, name) for line, name in private_uses(f.read(), path) if (rel, name) not in PENDING | ALLOWED]
    assert not uses, f"{rel}: private names of {'/'.join(LIBRARIES)}: " + \
        ", ".join(f"line {line}: {name}" for line, name in uses)
