"""Waiting for a condition, not for a time: the one polling loop of the demos, the
benchmarks and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> bool:
    """Poll ``condition`` every ``every_s`` until it holds (True) or ``timeout_s`` has passed
    (then its last value, checked once more at the deadline, decides)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return bool(condition())
