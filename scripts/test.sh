#!/usr/bin/env bash
# Sets up .venv if needed and runs the test suite (CPU only, no network beyond PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest -q tests "$@"
