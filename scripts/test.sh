#!/usr/bin/env bash
# The project's checks, as CI runs them: lint, format, layer contracts, docs (warnings are errors), tests.
# Extra arguments go to pytest (e.g. -m slow).
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
echo "== pytest"
python -m pytest "$@"
