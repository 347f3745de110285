#!/usr/bin/env bash
# One-shot GPU verification of quanta.cuda (about 10 minutes on an H200), for a machine with a
# GPU, nvcc and CuPy but no registry access. From the project root:
#   OUT=/tmp/out bash tools/gpu_check.sh
# 1. builds a wheel for this GPU's architecture (no build isolation) into a scratch directory;
# 2. runs tests/test_cuda.py on the GPU (the "gpu" cases; -rs lists anything skipped);
# 3. runs compute-sanitizer memcheck / racecheck on small cases, when installed;
# 4. python -m bench.gpu at 1M vectors, results in $OUT/bench_gpu.json.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_check.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
nvcc --version | tail -1
python3 -c "import cupy; print('cupy', cupy.__version__, 'runtime', cupy.cuda.runtime.runtimeGetVersion())"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
export QUANTA_CUDA=ON QUANTA_CUDA_ARCHITECTURES=${QUANTA_CUDA_ARCHITECTURES:-$arch}
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
rm -rf /tmp/quanta-whl /tmp/quanta-site
time python3 -m pip wheel -q --no-build-isolation --no-deps -w /tmp/quanta-whl . || exit 1
python3 -m pip install -q --no-deps --target /tmp/quanta-site /tmp/quanta-whl/quanta-*.whl || exit 1
export PYTHONPATH=/tmp/quanta-site
python3 -c "import quanta; print(quanta.build_info()['cuda']); assert quanta.cuda_available()" || exit 1
echo "== tests/test_cuda.py on the GPU"
timeout 300 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py -k "gpu and not emulated" \
  2>&1 | tail -30
if command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x \
    -p no:cacheprovider tests/test_cuda.py -k "gpu and not emulated and (topk or padding or \
    binary or sparse or fde or (pq_matches and PQ7x4) or (ivfpq_matches and l2 and not Refine \
    and not OPQ and not x4fs))" 2>&1 | tail -8
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x \
    -p no:cacheprovider tests/test_cuda.py -k "gpu and not emulated and (topk_matches or \
    chamfer or multivector)" 2>&1 | tail -8
fi
echo "== python -m bench.gpu"
timeout 300 python3 -m bench.gpu --n 1000000 --json "$OUT/bench_gpu.json"
