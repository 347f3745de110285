"""remove / contains / compact, the same on every index whose native part has them."""
from __future__ import annotations

import numpy as np

from ._validate import INT64_MAX, INT64_MIN, as_int64s
from .filter import as_removal


class Removable:
    """Mixin: the native index in ``self._index`` (plus any in ``_removal_targets``)."""

    def _removal_targets(self):
        return [self._index]

    def remove(self, ids) -> int:
        """Removes the vectors with these ids (an array-like of ids or a ``quanta.Filter``);
        returns how many the index held. Removed ids are never returned by a search; their
        space comes back on ``compact()``. Adding an id again after removing it works (an
        upsert is ``remove`` then ``add``)."""
        f = as_removal(ids)
        counts = [t.remove(f) for t in self._removal_targets()]
        return int(counts[0])

    def contains(self, ids) -> np.ndarray:
        """Whether each id is in the index (bool array)."""
        return self._index.contains(as_int64s(np.atleast_1d(ids), "ids"))

    def __contains__(self, id) -> bool:
        if isinstance(id, (bool, np.bool_)) or not isinstance(id, (int, np.integer)) \
                or not INT64_MIN <= id <= INT64_MAX:
            return False
        return bool(self.contains(id)[0])

    def compact(self) -> None:
        """Drops removed vectors from memory; searches return the same results after it."""
        for t in self._removal_targets():
            t.compact()
