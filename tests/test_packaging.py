"""Packaging: `pip install .` (not editable) gives a working sniper_d2 and tools, and every
third-party module the package imports is declared in pyproject.toml."""

import ast
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "sniper_d2")

# import name -> distribution name, for the third-party modules the package imports
DISTRIBUTION = {"numpy": "numpy", "yaml": "PyYAML", "PIL": "Pillow", "cv2": "opencv-python-headless",
                "tqdm": "tqdm", "fvcore": "fvcore", "torch": "torch", "torchvision": "torchvision",
                "pycocotools": "pycocotools", "matplotlib": "matplotlib", "tifffile": "tifffile",
                "rasterio": "rasterio", "pyogrio": "pyogrio", "shapely": "shapely", "pyproj": "pyproj"}
# installed separately (not on PyPI under this name): README, scripts/setup.sh
NOT_ON_PYPI = {"detectron2"}


def _pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _third_party_imports():
    """{top-level module name: first file importing it} over the package (imports anywhere in a file)."""
    stdlib = set(sys.stdlib_module_names)
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    mods = [node.module]
                else:
                    continue
                for m in mods:
                    top = m.split(".")[0]
                    if top not in stdlib and top != "sniper_d2":
                        found.setdefault(top, os.path.relpath(path, REPO))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    project = _pyproject()
    declared = {d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
                for group in [project["dependencies"], *project["optional-dependencies"].values()] for d in group}
    for module, where in _third_party_imports().items():
        if module in NOT_ON_PYPI:
            continue
        assert module in DISTRIBUTION, f"{where} imports {module}: add it to DISTRIBUTION and pyproject.toml"
        assert DISTRIBUTION[module].lower() in declared, f"{where} imports {module}, not declared in pyproject.toml"


def test_the_package_needs_nothing_from_the_checkout():
    # The lab (lab/), tools and benchmarks run from a checkout; an installed sniper_d2 has none of them,
    # so it neither imports them nor finds files relative to its own location.
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            tree = ast.parse(open(path).read(), path)
            imports = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            imports |= {n.module.split(".")[0] for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and not n.level and n.module}
            rel = os.path.relpath(path, REPO)
            assert not imports & {"lab", "tools", "benchmarks", "train_net"}, f"{rel} imports the checkout"
            assert not any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(tree)), \
                f"{rel} finds files relative to itself (they are not installed)"


def test_the_core_dependencies_do_not_pull_in_torch():
    core = {d.split("[")[0].strip().lower() for d in _pyproject()["dependencies"]}
    assert not core & {"torch", "torchvision", "detectron2"}
    assert {"numpy", "pyyaml", "pillow", "fvcore"} <= core


PLAN_CALL = """
import sys, numpy as np, sniper_d2
assert sniper_d2.__file__.startswith(sys.prefix), sniper_d2.__file__
from sniper_d2 import PlanParams, build_plan
rec = {"image_id": 1, "file_name": "a.jpg", "height": 600, "width": 800,
       "boxes": np.array([[10, 10, 40, 40], [500, 300, 700, 520]], np.float32),
       "category_ids": np.array([1, 1]), "iscrowd": np.zeros(2, bool)}
params = PlanParams(scales=(2.0, -1.0), valid_ranges=((0, 80), (60, -1)), chip_size=256, stride=32)
plan = build_plan([rec], params, epochs=1, seed=0, progress=False)
assert len(plan.chips) >= 2, plan.chips
assert not [m for m in ("torch", "detectron2") if m in sys.modules]
print("planned", len(plan.chips), "chips")
"""


@pytest.mark.slow
def test_pip_install_non_editable_gives_a_working_package_and_tools(tmp_path):
    # A fresh venv that sees the test venv's packages (torch, detectron2: nothing is downloaded) through
    # a .pth path entry, which does not run that venv's own .pth files (its editable sniper_d2 finder).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "_test_venv_packages.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    # Build from a copy, so that the checkout gets no build/ or egg-info folder.
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "sniper_d2", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--no-index", "--ignore-installed", str(src)],
                   check=True, env=env, cwd=str(tmp_path), capture_output=True)
    shutil.rmtree(src)

    out = subprocess.run([python, "-c", PLAN_CALL], env=env, cwd=str(tmp_path), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "planned" in out.stdout

    # The tools (and the lab the demo imports), away from the checkout: they import the installed package.
    tools = tmp_path / "app" / "tools"
    shutil.copytree(os.path.join(REPO, "tools"), tools, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(REPO, "lab"), tmp_path / "app" / "lab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "train_net.py"), tmp_path / "app" / "train_net.py")
    scripts = sorted(str(tools / n) for n in os.listdir(tools) if n.endswith(".py")) + [str(tmp_path / "app" / "train_net.py")]
    for script in scripts:
        out = subprocess.run([python, script, "--help"], env=env, cwd=str(tmp_path), capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout, f"{os.path.basename(script)} --help:\n{out.stderr[-2000:]}"
