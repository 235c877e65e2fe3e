#!/usr/bin/env bash
# Set up dicom-sr on a fresh machine: a virtual environment in .venv with the CPU build of torch
# (a GPU user's own torch build is kept if one is already importable) and the package itself.
#   bash scripts/setup.sh          # runtime: every command of the README (evaluate and batch extras)
#   bash scripts/setup.sh --test   # plus test, docs, evaluate and batch extras, dcmtk and dicom3tools
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
[[ "${1:-}" == "--test" ]] && with_test=1

if [[ ! -x .venv/bin/python ]]; then
    "${PYTHON:-python3}" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned to the CPU build that lies on disk; setup.cfg then asks only for a range.
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q torch==2.13.0
fi
if [[ $with_test == 1 ]]; then
    python -m pip install -q -e '.[test,docs,evaluate,batch]'
    # Real DICOM peers and validators for the tests (Debian packages).
    # Chromium and its driver: the compare page's browser tests (Playwright drives the
    # distribution's Chromium; it never downloads a browser of its own).
    if ! command -v dciodvfy >/dev/null || ! command -v dcmdump >/dev/null \
        || ! command -v chromium >/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                dcmtk dicom3tools chromium chromium-driver >/dev/null
        else
            echo "warning: dcmtk/dicom3tools/chromium missing and not root: their tests will be skipped" >&2
        fi
    fi
else
    python -m pip install -q -e '.[evaluate,batch]'
fi
echo "dicom-sr set up in .venv ($(.venv/bin/dicom-sr --version 2>/dev/null || echo 'version unknown'))"
