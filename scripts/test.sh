#!/usr/bin/env bash
# Set up (idempotent) and run the whole CPU test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# pytest exits 5 when it collects no test: with `set -e` that fails this script, as it should.
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
