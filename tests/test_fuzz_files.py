"""Saved files of every kind, mutated (truncated, bytes flipped with and without their
checksums fixed, array shapes in META crafted): loading them plainly and memory-mapped, and
searching what loads, never crashes and fails only with FormatError (load) or ValueError
(search). tests/fuzz_files.py runs longer campaigns (--mutants, --long)."""
from fuzz_files import KINDS, run


def test_mutated_files_never_crash_and_fail_cleanly():
    findings = run(KINDS, 300, seed=0, log=lambda line: None)
    assert findings == []
