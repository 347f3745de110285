"""The native module names every argument (py::arg), so keyword calls and help() work."""
import re

import quanta._core as core


def _callables(obj, prefix, seen):
    for name in dir(obj):
        if name.startswith("__") and name != "__init__":
            continue
        value = getattr(obj, name, None)
        if isinstance(value, type):
            if value not in seen and value.__module__.startswith("quanta"):
                seen.add(value)
                yield from _callables(value, f"{prefix}.{name}", seen)
        elif callable(value):
            yield f"{prefix}.{name}", value.__doc__ or ""


def test_every_binding_argument_is_named():
    unnamed = [name for name, doc in _callables(core, "_core", set())
               if re.search(r"\barg\d+\b", doc)]
    assert unnamed == []


def test_keyword_call_reaches_the_core():
    assert core.storage_bytes(storage="f16") == 2
