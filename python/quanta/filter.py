"""Filters for search: which ids a query may return (faiss's IDSelector, usearch's filters).

Every index's ``search(q, k, filter=...)`` takes:

- an array-like of int64 ids: an allow-list;
- a :class:`Filter` (from ids, an id range or a bitmap over ids; ``~f`` makes it a deny-list);
- a list with one of those (or ``None``: no filter) per query.

Filters are applied inside the scans: a row that is not allowed never enters a heap, so a
query gets k results whenever k allowed rows exist.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._validate import INT64_MAX, INT64_MIN, as_int, as_int64s

__all__ = ["Filter"]


class Filter:
    """A set of allowed ids. Build one with :meth:`ids`, :meth:`range` or :meth:`bitmap`;
    ``~f`` (or ``f.negate()``) allows every id but those.

    >>> quanta.Filter.ids([3, 7, 11])            # only these ids
    >>> quanta.Filter.range(1000, 2000)          # 1000 <= id < 2000
    >>> quanta.Filter.bitmap(mask)               # bool array: mask[i] allows id i
    >>> ~quanta.Filter.ids(banned)               # a deny-list
    """

    __slots__ = ("_native", "_text", "_recipe")

    def __init__(self, native, text, recipe):
        # recipe: the constructor and its arguments, so that a filter pickles (to ship it to
        # another process: quanta.distributed's shard actors)
        self._native, self._text, self._recipe = native, text, recipe

    def __reduce__(self):
        return _rebuild, (self._recipe, self._text)

    @classmethod
    def ids(cls, ids) -> "Filter":
        """Allows exactly these ids (non-negative integers; duplicates are fine)."""
        arr = np.asarray(ids)
        arr = as_int64s(np.zeros(0, np.int64) if arr.size == 0 else arr, "filter ids")
        if arr.ndim != 1:
            raise ValueError(f"filter ids must be a 1-D array; got shape {arr.shape}")
        return cls(_core.IdFilter.from_ids(arr), f"Filter.ids(<{arr.size} ids>)", ("ids", arr))

    @classmethod
    def range(cls, lo: int, hi: int) -> "Filter":
        """Allows the ids lo <= id < hi."""
        for name, v in (("lo", lo), ("hi", hi)):
            as_int(v, f"Filter.range: {name}", INT64_MIN, INT64_MAX)
        return cls(_core.IdFilter.from_range(int(lo), int(hi)), f"Filter.range({lo}, {hi})",
                   ("range", int(lo), int(hi)))

    @classmethod
    def bitmap(cls, mask) -> "Filter":
        """Allows id i where ``mask[i]`` is true (a 1-D bool array; ids past its end are not
        allowed)."""
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"Filter.bitmap: mask must be a bool array; got dtype {mask.dtype}")
        if mask.ndim != 1:
            raise ValueError(f"Filter.bitmap: mask must be 1-D; got shape {mask.shape}")
        bits = np.packbits(mask, bitorder="little")
        return cls(_core.IdFilter.from_bitmap(bits, mask.size),
                   f"Filter.bitmap(<{mask.size} bits>)", ("bitmap", bits, mask.size))

    def negate(self) -> "Filter":
        """The complement: every id this filter does not allow."""
        text = self._text[1:] if self._text.startswith("~") else "~" + self._text
        return Filter(self._native.negated(), text, ("not", self._recipe))

    __invert__ = negate

    def allows(self, ids) -> np.ndarray:
        """Whether each id is allowed (bool array)."""
        ids = np.ascontiguousarray(np.atleast_1d(ids), dtype=np.int64)
        return self._native.allows(ids)

    @property
    def max_allowed(self):
        """How many ids at most are allowed; None for deny-lists (unbounded)."""
        return self._native.max_allowed

    def __repr__(self) -> str:
        return self._text


def _rebuild(recipe, text):
    """The Filter a recipe describes (unpickling)."""
    if recipe[0] == "not":
        return _rebuild(recipe[1], text[1:] if text.startswith("~") else text).negate()
    make = {"ids": _core.IdFilter.from_ids, "range": _core.IdFilter.from_range,
            "bitmap": _core.IdFilter.from_bitmap}[recipe[0]]
    return Filter(make(*recipe[1:]), text, recipe)


def _one(f):
    if f is None:
        return None
    if isinstance(f, Filter):
        return f._native
    if isinstance(f, (bool, np.bool_)) or np.isscalar(f):
        raise TypeError("filter must be an array of ids, a quanta.Filter or a list of them per "
                        f"query; got {type(f).__name__}")
    return Filter.ids(f)._native


def is_per_query(filter) -> bool:
    """Whether a search's filter argument is one filter per query (a list or tuple holding
    Filters, arrays, lists or None) rather than one shared allow-list of integer ids."""
    return isinstance(filter, (list, tuple)) and bool(filter) and not all(
        isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) for x in filter)


def as_filters(filter, nq: int):
    """The native filters of one search: None, [shared] or one per query.

    A list or tuple whose items are all integers is one allow-list; a list holding Filters,
    arrays, lists or None is one filter per query and must have nq items.
    """
    if filter is None:
        return None
    if is_per_query(filter):
        if len(filter) != nq:
            raise ValueError(f"filter: a list of per-query filters needs one per query ({nq}); "
                             f"got {len(filter)}")
        natives = [_one(f) for f in filter]
        if all(f is None for f in natives):
            return None
        return [_core.IdFilter() if f is None else f for f in natives]
    return [_one(filter)]


def as_removal(ids):
    """remove()'s argument (ids array-like or a Filter) as one native filter."""
    if isinstance(ids, Filter):
        return ids._native
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, (bool, np.bool_)):
        ids = [ids]
    return _one(ids)
