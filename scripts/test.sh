#!/usr/bin/env bash
# The project's checks, as CI runs them: lint, format, layer contracts, docs (warnings are errors),
# the docs' figures against benchmarks/results (scripts/check_docs_numbers.py), tests, then the
# wheel: built, installed in its own venv, `process` and `evaluate` run from it
# (scripts/wheel_check.sh; its venv is kept in build/wheel-check/ and reused by later runs).
# Extra arguments go to pytest (e.g. -m slow). DICOM_SR_SKIP_WHEEL_CHECK=1 skips the wheel stage.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
echo "== ruff"
ruff check dicom_sr tests benchmarks sample_data docs scripts
ruff format --check dicom_sr tests benchmarks sample_data docs scripts
echo "== import-linter"
lint-imports
echo "== sphinx"
rm -rf docs/_build
sphinx-build -W --keep-going -q -b html docs docs/_build/html
echo "== docs numbers"
python scripts/check_docs_numbers.py
echo "== pytest"
python -m pytest "$@"
if [[ "${DICOM_SR_SKIP_WHEEL_CHECK:-0}" != 1 ]]; then
    echo "== wheel"
    PYTHON=python bash scripts/wheel_check.sh build/wheel-check
fi
