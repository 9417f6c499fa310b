"""Remember what was published, in bounded memory, so that nothing is published twice.

The API serves a station's latest period on every poll, and a retried poll serves it
again: a reading is identified by (station, timestamp) and published the first time only.
The oldest keys are forgotten beyond ``capacity``; with one reading per station and period,
a capacity of N covers N ÷ stations periods (50,000 keys ≈ 2 days of 30 stations at 20 s).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable


class RecentKeys:
    """A set that keeps the ``capacity`` most recently added keys."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def update(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self.add(key)
