"""The package's layering: inference never imports the training data side, and the modules that
planning and statistics machines run import numpy only."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "sniper_d2")


def _imported_modules(path):
    """Absolute names of the modules ``path`` imports (relative imports resolved), anywhere in the file."""
    package = os.path.relpath(os.path.dirname(path), REPO).replace(os.sep, ".")
    names = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def test_inference_never_imports_the_training_data_side():
    folder = os.path.join(PACKAGE, "inference")
    offenders = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            bad = {m for m in _imported_modules(os.path.join(folder, name))
                   if m == "sniper_d2.data" or m.startswith("sniper_d2.data.")}
            if bad:
                offenders[name] = sorted(bad)
    assert not offenders, f"sniper_d2/inference imports sniper_d2.data: {offenders}"


def test_importing_inference_loads_no_data_module():
    code = ("import sys, sniper_d2.inference, sniper_d2.inference.evaluation, sniper_d2.inference.proposal_dump; "
            "bad = [m for m in sys.modules if m.startswith('sniper_d2.data')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_neutral_modules_import_numpy_only():
    code = ("import sys, sniper_d2, sniper_d2.config, sniper_d2.config_types, sniper_d2.config_files, "
            "sniper_d2.config_checks, sniper_d2.stats, sniper_d2.chips, sniper_d2.plans, sniper_d2.cli, "
            "sniper_d2.geometry, sniper_d2.image_io; "
            "bad = [m for m in ('torch', 'detectron2') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_import_sniper_d2_is_numpy_only_and_exposes_the_documented_api():
    code = ("import sys, sniper_d2; assert not [m for m in ('torch', 'detectron2') if m in sys.modules]; "
            "sniper_d2.PlanParams, sniper_d2.ValidRange, sniper_d2.tile_windows; "
            "assert 'torch' not in sys.modules, 'a numpy-only name imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    import sniper_d2

    architecture = open(os.path.join(REPO, "docs", "ARCHITECTURE.md")).read()
    for name in sniper_d2.__all__:
        assert getattr(sniper_d2, name) is not None
        assert f"{name}" in architecture, f"sniper_d2.{name} is not named in docs/ARCHITECTURE.md"
