#!/usr/bin/env bash
# The Python package on AArch64, under qemu-user, with the NEON kernels active: Debian's arm64
# Python 3.11 unpacked into a folder (no arm64 packages are installed), NumPy and pytest as
# aarch64 wheels from PyPI, quanta's C++ library and bindings cross-compiled with Debian's
# g++-aarch64-linux-gnu, then pytest on the given test files. Emulation runs about 15x slower
# than native: the default selection (flat, storages, k-means, PQ) takes about 10 minutes,
# test_binary.py alone 15.
#   bash tools/arm_python_check.sh [work-dir] [pytest arguments]
# Needs root once: `dpkg --add-architecture arm64` so apt can download arm64 packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/quanta-arm}
shift || true
mkdir -p "$work/debs" "$work/sysroot"

if [ ! -x "$work/sysroot/usr/bin/python3.11" ]; then
  echo "== arm64 Python 3.11 (Debian packages, unpacked)"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  (cd "$work/debs" && apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 \
    libpython3.11-stdlib:arm64 libpython3.11-dev:arm64 libpython3.11:arm64 libexpat1:arm64 \
    zlib1g:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 \
    libsqlite3-0:arm64 libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 libuuid1:arm64 \
    libnsl2:arm64 libtirpc3:arm64 libcrypt1:arm64 libgssapi-krb5-2:arm64 libkrb5-3:arm64 \
    libk5crypto3:arm64 libkrb5support0:arm64 libcom-err2:arm64 libkeyutils1:arm64)
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/sysroot"; done
  cp -a /usr/aarch64-linux-gnu/lib/. "$work/sysroot/lib/"  # the cross toolchain's libc, libstdc++
fi
if [ ! -d "$work/site/scipy" ]; then
  echo "== NumPy, SciPy, pytest, ml_dtypes (aarch64 wheels)"
  pip install -q --target "$work/site" --platform manylinux_2_28_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.11 --only-binary=:all: \
    numpy scipy pytest ml_dtypes
fi

echo "== quanta, cross-compiled"
cmake -S "$root" -B "$work/build" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" \
  -DQUANTA_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/build" -j2 --target quanta_cpu >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; exit 1; }
rm -rf "$work/pkg" && mkdir -p "$work/pkg" && cp -r "$root/python/quanta" "$work/pkg/"
rm -f "$work"/pkg/quanta/*.so
bindings=$(ls "$root"/python/bindings/*.cpp | grep -v module_cuda)
aarch64-linux-gnu-g++ -O2 -std=c++17 -fPIC -shared -fvisibility=hidden -I"$root/cpp/include" \
  -I"$(python3 -c 'import pybind11; print(pybind11.get_include())')" \
  -I"$work/sysroot/usr/include/python3.11" -I"$work/sysroot/usr/include" $bindings \
  "$work/build/libquanta_cpu.a" "$work/build/libquanta_kernels.a" -lpthread \
  -o "$work/pkg/quanta/_core.cpython-311-aarch64-linux-gnu.so"

echo "== pytest under qemu-aarch64"
export QEMU_LD_PREFIX="$work/sysroot" PYTHONPATH="$work/pkg:$work/site"
python=(qemu-aarch64 "$work/sysroot/usr/bin/python3.11")
"${python[@]}" -c "import quanta; i = quanta.build_info(); print(i['simd_supported'], i['simd_active'], i['cpu_features'])"
cd "$root"
if [ $# -eq 0 ]; then
  # Tests that start a child Python are left out: the kernel has no binfmt entry for arm64.
  set -- tests/test_flat.py tests/test_storage.py tests/test_kmeans.py tests/test_pq.py \
    -k "not environment_variable"
fi
"${python[@]}" -m pytest -q -p no:cacheprovider "$@"
