#!/usr/bin/env bash
# Build the wheel, install it in a fresh venv (CPU torch first, then the wheel with its evaluate
# extra) and run `dicom-sr process` and `dicom-sr evaluate` from there, outside the source tree:
# what a user of the wheel gets, not the editable install the other tests use.
#   bash scripts/wheel_check.sh [WORKDIR]     # default: a temporary folder, removed at the end
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-}"
if [[ -z $work ]]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"
python="${PYTHON:-python3}"
start=$SECONDS

# The wheel is built from a copy of what git would commit (tracked and untracked, not ignored),
# so no build/ or egg-info lands in the tree and nothing outside it leaks into the wheel.
rm -rf "$work/src" "$work/dist"
mkdir -p "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$repo" && xargs -0 cp --parents -t "$work/src" 2>/dev/null || true)
# The build backend of the running Python when it has one (a minute faster than an isolated
# build on 2 cores; the wheel is the same), else pip's isolated build.
isolation=()
if "$python" -c "import setuptools.command.bdist_wheel" 2>/dev/null; then  # setuptools >= 70.1
    isolation=(--no-build-isolation)
fi
"$python" -m pip wheel -q --no-deps "${isolation[@]}" -w "$work/dist" "$work/src"
wheel="$(ls "$work"/dist/dicom_sr-*.whl)"
echo "built $(basename "$wheel") in $((SECONDS - start)) s"

if [[ ! -x $work/venv/bin/python ]]; then
    "$python" -m venv "$work/venv"
fi
# torch first, the CPU build (as scripts/setup.sh does); the wheel then asks only for a range.
"$work/venv/bin/python" -m pip install -q torch==2.13.0
"$work/venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
"$work/venv/bin/python" -m pip install -q "$wheel[evaluate]"
echo "installed in $((SECONDS - start)) s"

cd "$work"  # not the source tree: dicom_sr must come from the venv's site-packages
"$work/venv/bin/python" - <<'PY'
import dicom_sr, dicom_sr.config as c
assert "site-packages" in dicom_sr.__file__, dicom_sr.__file__
assert "bmode-default" in c.available_pipelines(), c.pipelines_dir()
print("pipelines from", c.pipelines_dir())
PY
rm -rf "$work/out" "$work/report" "$work/page"
"$work/venv/bin/dicom-sr" process "$repo/sample_data/us_phantom_single.dcm" --out "$work/out" \
    --method bicubic
test -n "$(find "$work/out" -name '*.dcm' -print -quit)"
"$work/venv/bin/dicom-sr" evaluate "$repo/sample_data/" --out "$work/report" \
    --methods bicubic,ibp --scale 2
test -n "$(ls -A "$work/report")"
test -s "$work/report/report.html" && test -s "$work/report/assets/viewer.js"
# the compare page: its viewer's script and style sheet come from the wheel's package data
"$work/venv/bin/dicom-sr" compare "$repo/sample_data/us_phantom_single.dcm" --derived "$work/out" \
    --out "$work/page" -q
test -s "$work/page/series-001.html" && test -s "$work/page/assets/viewer.js"
echo "wheel check passed in $((SECONDS - start)) s"
