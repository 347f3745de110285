"""Typing: the native modules' stubs cover what the modules define, and mypy accepts a small
program written against the public API (skipped, with the reason, without mypy)."""
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

import quanta

PKG = pathlib.Path(quanta.__file__).parent


@pytest.mark.parametrize("module", ["_core", "_cuda"])
def test_stubs_name_every_native_class_function_and_method(module):
    try:
        mod = importlib.import_module(f"quanta.{module}")
    except ImportError:
        pytest.skip(f"quanta.{module} is not built here")
    stub = (PKG / f"{module}.pyi").read_text()
    declared = set(re.findall(r"^\s*(?:class|def)\s+(\w+)", stub, re.M)) | \
        set(re.findall(r"^\s+(\w+)\s*:", stub, re.M))
    missing = []
    for name in dir(mod):
        if name.startswith("_"):
            continue
        if name not in declared:
            missing.append(name)
        obj = getattr(mod, name)
        if isinstance(obj, type):
            missing += [f"{name}.{a}" for a in vars(obj) if not a.startswith("_")
                        and a not in declared]
    assert not missing, f"stale stubs (run tools/stubs.sh): {missing}"


def test_mypy_accepts_a_program_using_the_public_api(tmp_path):
    pytest.importorskip("mypy")
    program = tmp_path / "example.py"
    program.write_text('''
import numpy as np
import quanta

x = np.random.rand(1000, 32).astype(np.float32)
index = quanta.FlatIndex(32, "ip", "f16")
index.add(x, ids=np.arange(1000))
D, I = index.search(x[:5], 10, filter=quanta.Filter.range(0, 500))
graph = quanta.index_factory(32, "Graph16(f16)")
graph.add(x)
res = graph.search(x[:2], k=5)
native: quanta.native.Index = index.native
params = quanta.native.GraphSearchParams()
params.width = 32
''')
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", str(program)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # metric and storage names are Literal types: a misspelt one is caught before running
    wrong = tmp_path / "wrong.py"
    wrong.write_text('import quanta\nquanta.FlatIndex(32, "dot", "f64")\n')
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", str(wrong)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "'dot'" in r.stdout and "'f64'" in r.stdout, r.stdout
