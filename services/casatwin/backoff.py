"""Exponential backoff with jitter: how long to wait before retrying after a failure.

The ceiling doubles with each failure in a row (``base_s``, 2×, 4×, ... up to ``max_s``);
the delay is drawn uniformly from the upper half of the ceiling ("equal jitter"), so that
retries never come back-to-back yet several services restarted together do not retry in
lockstep. Pure: the random draw is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_DOUBLINGS = 60  # 2**60 × any sane base is past every cap; avoids float overflow


@dataclass(frozen=True)
class Backoff:
    base_s: float
    max_s: float
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s < self.base_s or self.factor < 1:
            raise ValueError("backoff needs 0 < base_s <= max_s and factor >= 1")

    def ceiling(self, failures: int) -> float:
        """The largest delay after ``failures`` failures in a row (``failures`` >= 1)."""
        doublings = min(max(failures, 1) - 1, MAX_DOUBLINGS)
        return min(self.max_s, self.base_s * self.factor**doublings)

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        """A jittered delay in [ceiling / 2, ceiling]; ``random()`` returns a float in [0, 1)."""
        ceiling = self.ceiling(failures)
        return ceiling / 2 + random() * ceiling / 2
