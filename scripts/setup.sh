#!/usr/bin/env bash
# One-shot, idempotent set-up of sniper_d2 on a fresh machine.
#
# Creates .venv/ at the repository root and installs torch, torchvision, detectron2, fvcore,
# pycocotools, opencv, rasterio/pyogrio/shapely/pyproj (rasters by windows, GIS vectors), tqdm,
# matplotlib, the test tools and sniper_d2 itself (editable).
# Re-running it when everything is present takes a few seconds.
#
# detectron2 is not published on the package registry under its own name. When a real build is
# already importable in .venv we keep it. Otherwise we install `pb1-detectron2==0.6`, which is the
# upstream v0.6 Python source without its C++/CUDA sources, with these compatibility fixes:
#   1. setup.py declares `ext_modules` for detectron2._C, whose sources are missing from the sdist:
#      we drop `ext_modules` so it installs as pure Python.
#   2. detectron2 imports `detectron2._C` in a few places (e.g. ROIAlignRotated, deformable conv).
#      Faster R-CNN with FPN only needs torchvision ops, so we ship a tiny stand-in module
#      `detectron2/_C.py` that raises a clear error if one of the compiled ops is actually used.
#   3. Pillow 10 removed `Image.LINEAR`, still used by detectron2 0.6 transforms: we pin Pillow<10.
#   4. Python 3.12+/setuptools 81 removed `pkg_resources`, imported by detectron2 0.6's model zoo:
#      we pin setuptools<81.
# Environment: SNIPER_PYTHON (interpreter for the venv, default python3),
#              SNIPER_TORCH_SPEC (default: the release that lies on this machine's disk).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${SNIPER_PYTHON:-python3}"
ARCH="$(uname -m)"
if [ -z "${SNIPER_TORCH_SPEC:-}" ]; then
  if [ "$ARCH" = "aarch64" ]; then
    SNIPER_TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
  else
    SNIPER_TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
  fi
fi

log() { echo "[setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)
pip_install() {
  # pip warns about configured local index folders that this machine lacks; drop only those lines.
  "${PIP[@]}" install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

have() { "$VPY" - "$@" <<'PYEOF' >/dev/null 2>&1
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
PYEOF
}

if ! have torch torchvision; then
  log "installing $SNIPER_TORCH_SPEC (large download the first time)"
  # shellcheck disable=SC2086
  pip_install $SNIPER_TORCH_SPEC
fi

if ! have fvcore pycocotools cv2 tqdm matplotlib hypothesis pytest yaml tensorboard; then
  log "installing runtime and test dependencies"
  pip_install "setuptools<81" wheel "Pillow<10" fvcore iopath pycocotools \
    opencv-python-headless tqdm matplotlib pyyaml "hypothesis>=6" "pytest>=7" pytest-timeout \
    cloudpickle tabulate termcolor yacs omegaconf hydra-core tensorboard
fi

# Geospatial stack for orthomosaics: rasterio (ships GDAL) reads every raster by windows, pyogrio +
# shapely read and write vector labels and detections, pyproj reprojects.
if ! have rasterio pyogrio shapely pyproj; then
  log "installing the raster and vector readers (rasterio, pyogrio, shapely, pyproj)"
  pip_install rasterio pyogrio shapely pyproj
fi

# A usable detectron2: importable, and its _C answers collect_env's questions (a real build, or
# our stand-in from this script's current version).
if ! have detectron2.modeling detectron2.engine || ! "$VPY" -c "import detectron2._C as c; c.get_compiler_version()" >/dev/null 2>&1; then
  log "installing detectron2 (pb1-detectron2==0.6, Python-only; see the fixes listed in this script)"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  # --no-build-isolation: its setup.py imports torch to generate metadata.
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation -d "$WORK" "pb1-detectron2==0.6" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  tar -xzf "$WORK"/pb1*detectron2-0.6.tar.gz -C "$WORK"
  SRC="$(find "$WORK" -maxdepth 1 -type d -name '*detectron2-0.6' | head -n1)"
  # Fix 1: drop the C++/CUDA extension (its sources are not in the sdist).
  "$VPY" - "$SRC/setup.py" <<'PYEOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
text, n = re.subn(r"ext_modules\s*=\s*get_extensions\(\),?", "", text)
if n == 0:
    sys.exit(f"{path}: could not find 'ext_modules=get_extensions()' to remove")
text = re.sub(r"cmdclass\s*=\s*\{[^}]*\},?", "", text)
open(path, "w").write(text)
PYEOF
  # Fix 2: a stand-in for detectron2._C that names the missing op when used.
  cat > "$SRC/detectron2/_C.py" <<'PYEOF'
"""Stand-in for detectron2's compiled extension (installed by sniper_d2/scripts/setup.sh).

This detectron2 is the Python-only v0.6 source. Faster R-CNN with FPN uses torchvision ops only.
Any other attribute looked up here is a compiled op this install lacks.
"""


def get_compiler_version():  # used by detectron2.utils.collect_env
    return "none (Python-only detectron2)"


def get_cuda_version():  # used by detectron2.utils.collect_env
    return "none (Python-only detectron2)"


def __getattr__(name):
    raise ImportError(
        f"detectron2._C.{name} is not available: this detectron2 is a Python-only install "
        "(see scripts/setup.sh). Install a compiled detectron2 to use rotated boxes, "
        "deformable convolutions or the fast COCO evaluator."
    )
PYEOF
  pip_install --no-deps --no-build-isolation "$SRC"
fi

if ! (cd / && "$VPY" -c "import sniper_d2, os, sys; sys.exit(os.path.dirname(os.path.dirname(sniper_d2.__file__)) != sys.argv[1])" "$ROOT") 2>/dev/null; then
  log "installing sniper_d2 (editable)"
  pip_install --no-deps --no-build-isolation -e "$ROOT"
fi
"$VPY" -c "import torch, detectron2, sniper_d2; print('[setup] ok: torch', torch.__version__, '| detectron2', detectron2.__version__, '| sniper_d2', sniper_d2.__version__)"
