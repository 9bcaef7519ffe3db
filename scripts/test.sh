#!/usr/bin/env bash
# Sets up .venv (with Apache Beam) if needed and runs the test suite (CPU only, no network beyond PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-beam.txt  # + Apache Beam, for tests/test_beam_writer.py
export TF_CPP_MIN_LOG_LEVEL=3
# Two pytest workers (pytest-xdist): most tests wait on processes of their own, so two
# share 2 cores well. FACEDET_TEST_WORKERS=1 runs them in one process.
exec .venv/bin/python -m pytest -q -n "${FACEDET_TEST_WORKERS:-2}" tests "$@"
