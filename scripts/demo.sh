#!/usr/bin/env bash
# Set up (idempotent) and run the end-to-end CPU demo on the synthetic data set.
# Extra arguments go to tools/demo.py (see: .venv/bin/python tools/demo.py --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/python tools/demo.py "$@"
