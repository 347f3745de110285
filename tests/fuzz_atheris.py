"""A coverage-guided fuzz target for quanta.from_bytes (atheris, libFuzzer's engine for
Python; optional: `pip install atheris`). The corpus starts from a saved index of every kind
in tests/fuzz_files.py; each input gets its checksums made right (so mutations reach the
content checks), is loaded and, when it loads, searched. A load may fail
only with FormatError and a search only with ValueError; anything else, or a crash, stops
the run with the input saved (libFuzzer's crash-* file).

    python tests/fuzz_atheris.py -max_total_time=600          # ten minutes
    python tests/fuzz_atheris.py -runs=20000 corpus_dir/       # keep the corpus it grows

Python code (the loaders' checks) is instrumented for coverage; the native restore code is
not (that would need a clang build with -fsanitize=fuzzer-no-link), so mutations are guided
by the Python side only.
"""
from __future__ import annotations

import os
import struct
import sys
import tempfile
import zlib

import atheris
import numpy as np

import quanta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_files import KINDS, _build, _fix_crc, _sections  # noqa: E402

# Every Python function loaded so far (quanta's loaders, json, numpy): instrument_imports
# misses modules that an editable install's import hook loads.
atheris.instrument_all()

Q = np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32)
SPARSE_Q = (np.array([0, 500]), np.arange(500, dtype=np.int32), np.ones(500, np.float32))


def with_checksums(data: bytes) -> bytes:
    """The input with its header's and sections' checksums made right where its layout
    parses, so that mutations reach the content checks behind them."""
    buf = bytearray(data)
    try:
        for sec in _sections(buf):
            if sec[2] + sec[3] <= len(buf):
                _fix_crc(buf, sec)
    except Exception:  # noqa: BLE001 - no section layout to fix: loaded as it is
        pass
    if len(buf) >= 64:
        struct.pack_into("<I", buf, 60, zlib.crc32(bytes(buf[:60])))
    return bytes(buf)


def one_input(data: bytes) -> None:
    try:
        index = quanta.from_bytes(with_checksums(data))
    except quanta.FormatError:
        return
    try:
        if isinstance(index, quanta.SparseIndex):
            index.search(SPARSE_Q, 5)
        elif isinstance(index, quanta.MultiVectorIndex):
            index.search(Q, np.array([0, 3], np.int64), k=5, exact=False)
        elif index.dim == 32:
            index.search(Q, 5)
    except ValueError:
        pass


def main() -> None:
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus folder: seed one
        corpus = tempfile.mkdtemp(prefix="quanta-atheris-")
        for i, kind in enumerate(KINDS):
            with open(os.path.join(corpus, f"{i}.qnt"), "wb") as f:
                f.write(_build(kind))
        args.append(corpus)
    if not any(a.startswith("-max_len") for a in args):
        args.append("-max_len=262144")  # the largest seed is 166 KB
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
