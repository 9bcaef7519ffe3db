#!/usr/bin/env bash
# Sets up .venv (with Apache Beam) if needed and runs the test suite (CPU only, no network beyond PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-beam.txt  # + Apache Beam, for tests/test_beam_writer.py
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest -q tests "$@"
