#!/usr/bin/env bash
# What a GPU owner runs once: the tests marked `gpu` (CUDA against the CPU, determinism,
# listen and batch on the GPU) and the speed and memory benchmark (benchmarks/gpu_bench.py),
# whose table the docs quote and whose JSON lands in benchmarks/results/gpu_bench/.
# Without a CUDA device it says so and exits 0.
#
#   bash scripts/gpu_check.sh            # uses .venv/bin/python if there is one, else python3
#   PYTHON=/path/to/python bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1)); nothing to check"
    exit 0
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__} (CUDA {torch.version.cuda})')"
echo "== tests marked gpu =="
"$PY" -m pytest -m gpu -v -p no:cacheprovider -rs tests/test_gpu.py
tests=$?
echo "== speed and memory =="
"$PY" benchmarks/gpu_bench.py "$@"
bench=$?
echo "gpu_check: tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
