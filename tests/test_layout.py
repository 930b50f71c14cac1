"""The package's layering: inference never imports the training data side, and the modules that
planning and statistics machines run import numpy only."""

import ast
import importlib
import os
import re
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


def _documented_api():
    """[(section title, name, module)] of every row of docs/api.md's tables."""
    rows, section = [], None
    for line in open(os.path.join(REPO, "docs", "api.md")):
        if line.startswith("## "):
            section = line[3:].strip()
        m = re.match(r"\| `([A-Za-z_][A-Za-z0-9_]*)` \| `([a-z_.0-9]+)` \| (.+) \|$", line.strip())
        if m:
            assert m.group(3).strip(), f"docs/api.md: {m.group(1)} has no description"
            rows.append((section, m.group(1), m.group(2)))
    return rows


def test_every_documented_name_is_exported_from_the_module_named():
    import sniper_d2

    rows = _documented_api()
    assert len(rows) > 50
    for _, name, module in rows:
        assert name in sniper_d2.__all__, f"docs/api.md documents {name}, which sniper_d2 does not export"
        assert getattr(sniper_d2, name) is getattr(importlib.import_module(module), name), \
            f"docs/api.md: sniper_d2.{name} is not {module}.{name}"


def test_every_exported_name_is_documented_once():
    import sniper_d2

    names = [name for _, name, _ in _documented_api()]
    assert sorted(set(names)) == sorted(names), "docs/api.md documents a name twice"
    submodules = {n[:-3] if n.endswith(".py") else n for n in os.listdir(PACKAGE)}
    assert not set(sniper_d2.__all__) & submodules, "an exported name is also a submodule's (importing it shadows)"
    missing = sorted(set(sniper_d2.__all__) - set(names))
    assert not missing, f"sniper_d2 exports names docs/api.md does not describe: {missing}"


def test_import_sniper_d2_is_numpy_only_and_so_are_the_names_documented_as_such():
    numpy_only = [name for section, name, _ in _documented_api() if not section.lower().startswith("torch")]
    assert "PlanParams" in numpy_only and "SniperDatasetMapper" not in numpy_only
    code = ("import sys, sniper_d2; assert not [m for m in ('torch', 'detectron2') if m in sys.modules]; "
            f"[getattr(sniper_d2, n) for n in {numpy_only!r}]; "
            "bad = [m for m in ('torch', 'detectron2') if m in sys.modules]; "
            "assert not bad, f'a name documented as numpy-only imported {bad}'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def _loads_a_benchmark(line):
    """A line that puts benchmarks/ on sys.path or names a benchmark file other than to run it."""
    if "benchmarks" not in line or "sys.executable" in line:
        return False
    return "sys.path" in line or re.search(r"[\"']\w+\.py[\"']", line) is not None


def test_tests_do_not_import_benchmarks():
    benchmark_modules = {n[:-3] for n in os.listdir(os.path.join(REPO, "benchmarks")) if n.endswith(".py")}
    offenders = set()
    for name in sorted(os.listdir(os.path.join(REPO, "tests"))):
        if not name.endswith(".py") or name == os.path.basename(__file__):
            continue
        path = os.path.join(REPO, "tests", name)
        imported = {m.split(".")[0] for m in _imported_modules(path)}
        if imported & benchmark_modules or any(_loads_a_benchmark(line) for line in open(path)):
            offenders.add(name)
    assert not offenders, f"tests importing benchmarks (oracles belong in tests/): {sorted(offenders)}"
