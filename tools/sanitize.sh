#!/usr/bin/env bash
# Builds quanta with AddressSanitizer + UndefinedBehaviorSanitizer in a fresh virtualenv and
# runs the test suite (the file fuzzer included) against it. Any report fails the run.
#   bash tools/sanitize.sh [venv folder]        # about 15 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-$(mktemp -d)/venv}
python3 -m venv "$venv"
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet numpy pytest pytest-benchmark scipy ml_dtypes pybind11 \
  "scikit-build-core>=0.10"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
QUANTA_CUDA=OFF python -m pip install --quiet --no-build-isolation --no-deps \
  -Cbuild-dir=build/sanitize -Ccmake.build-type=RelWithDebInfo -Cinstall.strip=false \
  -Ccmake.define.CMAKE_CXX_FLAGS="$san" -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="$san" .
# Python itself is not instrumented: the runtimes are preloaded; leaks of the interpreter
# are not ours to report.
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
# (allocations over 2 GiB fail as bad_alloc, as the fuzzer's address-space limit makes them
# fail without ASan)
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=2048
export UBSAN_OPTIONS=print_stacktrace=1
cd "$(mktemp -d)"  # import the installed quanta, not the source tree's python/
python -m pytest -q -x -p no:cacheprovider "$OLDPWD/tests"
