"""Every code block of the README runs as written.

Python blocks run each in a fresh interpreter, in a temporary directory; a block that does not
import anything continues the block before it. A first line with ``# needs: a, b`` names what
the block needs beyond the test extras (``torch``, ``cupy``, ``a CUDA GPU``): without it the
block is skipped, with the reason, except that a block needing only CuPy and a GPU then runs
on the CPU stand-ins of tests/cuda_emulator.py. The install block is what CI itself runs.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(), re.S | re.M)


def _runnable():
    """(id, language, code, needs) for every block but the install one."""
    out, previous = [], ""
    for i, (lang, code) in enumerate(BLOCKS):
        if lang == "bash" and "pip install" in code:
            continue
        if lang == "python" and not re.search(r"^import |^from ", code, re.M):
            code = previous + code  # a continuation of the block above
        needs = re.findall(r"# needs: (.*)$", code, re.M)
        out.append(pytest.param(lang, code, ", ".join(needs), id=f"block{i}-{lang}"))
        previous = code
    return out


def _missing(needs: str) -> str | None:
    for need in filter(None, (n.strip() for n in needs.replace(",", "\n").splitlines())):
        if need == "a CUDA GPU":
            try:
                from quanta import _cuda
                if _cuda.device_count() == 0:
                    return "no CUDA device is visible"
            except ImportError:
                return "quanta was built without CUDA"
        elif importlib.util.find_spec(need) is None:
            return f"{need} is not installed"
    return None


def test_the_readme_has_code_blocks():
    assert sum(lang == "python" for lang, _ in BLOCKS) >= 6


@pytest.mark.parametrize("lang,code,needs", _runnable())
def test_readme_block_runs(lang, code, needs, tmp_path):
    reason = _missing(needs)
    if reason and set(map(str.strip, needs.split(","))) <= {"cupy", "a CUDA GPU"}:
        code = (f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
                f"import cuda_emulator; cuda_emulator.install_globally()\n" + code)
    elif reason:
        pytest.skip(reason)
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
