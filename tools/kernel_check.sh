#!/usr/bin/env bash
# Every SIMD kernel against the scalar reference (cpp/tests/test_kernels.cpp, run by ctest),
# and the engine contract used from C++ alone (cpp/tests/test_engine.cpp):
#   1. natively: each level this CPU runs (avx2, avx512 on x86-64);
#   2. on x86-64 hosts, cross-compiled for AArch64 (the whole C++ library, so portable code
#      that only builds on x86 shows up too) and run under qemu-user twice: as a CPU with the
#      dotprod extension (SDOT) and as a Cortex-A53 (Armv8.0), so both int8 paths run.
# Needs cmake and a C++ compiler; step 2 needs Debian's g++-aarch64-linux-gnu and qemu-user
#   (apt-get install g++-aarch64-linux-gnu qemu-user). About a minute on 2 cores.
#   bash tools/kernel_check.sh [build-dir]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/kernel-tests}
mkdir -p "$out"

build() {  # the compiler's output only when it fails
  cmake --build "$@" -j2 >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
}

echo "== native ($(uname -m))"
cmake -S "$root" -B "$out/native" -DQUANTA_BUILD_TESTS=ON -DQUANTA_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
build "$out/native" --target test_kernels test_engine
ctest --test-dir "$out/native" --output-on-failure --verbose | grep -E "kernels:|engine:|checks|cpu features|Passed|Failed"

[ "$(uname -m)" = x86_64 ] || exit 0
for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: apt-get install g++-aarch64-linux-gnu qemu-user" >&2
    exit 1
  }
done
echo "== aarch64 (cross-compiled, under qemu-aarch64)"
cmake -S "$root" -B "$out/aarch64" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" \
  -DQUANTA_BUILD_TESTS=ON -DQUANTA_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
build "$out/aarch64"
for cpu in max cortex-a53; do
  echo "-- qemu cpu: $cpu"
  QEMU_CPU=$cpu ctest --test-dir "$out/aarch64" --output-on-failure --verbose |
    grep -E "kernels:|engine:|checks|cpu features|Passed|Failed"
done
