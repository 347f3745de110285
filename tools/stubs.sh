#!/usr/bin/env bash
# Regenerates the type stubs of the native modules (python/quanta/_core.pyi, and _cuda.pyi
# when this build has the CUDA module) from the installed quanta: run after changing a
# binding. Needs pybind11-stubgen (pip install pybind11-stubgen).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
for mod in _core _cuda; do
  if python -c "import quanta.$mod" 2>/dev/null; then
    pybind11-stubgen "quanta.$mod" -o "$out"
    cp "$out/quanta/$mod.pyi" "python/quanta/$mod.pyi"
    echo "wrote python/quanta/$mod.pyi"
  fi
done
