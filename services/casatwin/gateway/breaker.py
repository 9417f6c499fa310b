"""A circuit breaker: stop hammering an API that is down, probe it now and then.

Three states:

- **closed** — normal: every poll goes out. ``failure_threshold`` failed polls in a row
  open the breaker.
- **open** — paused: no request goes out for ``open_s`` seconds, then the breaker turns
  half-open on its own.
- **half-open** — trial: polls go out; ``half_open_probes`` successes in a row close the
  breaker, one failure opens it again for another ``open_s``.

Pure: time is passed in (monotonic seconds) and every state change is returned as a
:class:`Transition` so that the caller logs it and updates its metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


# The value of the Prometheus gauge: higher is worse.
STATE_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class Transition:
    before: BreakerState
    after: BreakerState
    at: float  # monotonic seconds
    reason: str


@dataclass
class CircuitBreaker:
    failure_threshold: int
    open_s: float
    half_open_probes: int = 1
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive failures while closed
    probe_successes: int = 0  # consecutive successes while half-open
    opened_at: float = 0.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1 or self.open_s < 0:
            raise ValueError(
                "a breaker needs failure_threshold >= 1, half_open_probes >= 1, open_s >= 0"
            )

    @property
    def allows_requests(self) -> bool:
        """Whether a request may go out (call :meth:`tick` first)."""
        return self.state is not BreakerState.OPEN

    def wait_s(self, now: float) -> float:
        """Seconds until the open breaker lets a trial request through (0 if not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.open_s - now)

    def tick(self, now: float) -> Transition | None:
        """Let time act: an open breaker whose pause is over turns half-open."""
        if self.state is BreakerState.OPEN and now >= self.opened_at + self.open_s:
            self.probe_successes = 0
            return self._move(BreakerState.HALF_OPEN, now, f"paused for {self.open_s:g} s")
        return None

    def record_success(self, now: float) -> Transition | None:
        if self.state is BreakerState.HALF_OPEN:
            self.probe_successes += 1
            if self.probe_successes >= self.half_open_probes:
                self.failures = 0
                return self._move(
                    BreakerState.CLOSED, now, f"{self.probe_successes} trial poll(s) succeeded"
                )
            return None
        self.failures = 0
        return None

    def record_failure(self, now: float, cause: str = "") -> Transition | None:
        """Count a failed request; ``cause`` (what went wrong) ends up in the reason."""
        last = f" ({cause})" if cause else ""
        if self.state is BreakerState.HALF_OPEN:
            self.opened_at = now
            return self._move(BreakerState.OPEN, now, f"the trial poll failed{last}")
        if self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self.opened_at = now
                reason = f"{self.failures} failed polls in a row, the last{last}"
                return self._move(BreakerState.OPEN, now, reason)
        return None

    def _move(self, after: BreakerState, now: float, reason: str) -> Transition:
        transition = Transition(self.state, after, now, reason)
        self.state = after
        return transition


def describe(transition: Transition) -> str:
    """The transition as an operator reads it in the log."""
    if transition.after is BreakerState.OPEN:
        return "circuit breaker OPEN: the traffic API is failing; requests paused"
    if transition.after is BreakerState.HALF_OPEN:
        return "circuit breaker HALF-OPEN: sending a trial request to the traffic API"
    return "circuit breaker CLOSED: the traffic API answers again; normal polling resumes"
