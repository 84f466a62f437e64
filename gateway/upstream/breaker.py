"""A circuit breaker per provider: stop calling a provider that keeps failing.

closed -> open after `failures` consecutive failures; open fails fast for `reset` seconds;
then half-open lets exactly one probe through: its success closes the breaker, its failure
opens it again. A failure is the provider's fault (5xx, timeout, connection error); a 4xx
is an answer, so it counts as a success.

The state lives in the process: each replica judges the provider from its own calls, which
is enough to shed load quickly and needs no shared store that could itself be down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from gateway.errors import IntegrationUnavailable
from gateway.observability import BREAKER_STATE

__all__ = ["BreakerState", "CircuitBreaker"]

log = logging.getLogger("gateway.upstream")

BreakerState = Literal["closed", "half_open", "open"]

# gateway_breaker_state values (DESIGN section 11).
_GAUGE: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    """The breaker of one provider.

    Call `acquire` before each call, then exactly one of `record_success`,
    `record_failure` or `release`, passing on what `acquire` returned.
    """

    def __init__(
        self,
        source: str,
        *,
        failures: int,
        reset: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._threshold = failures
        self._reset = reset
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        BREAKER_STATE.labels(source).set(_GAUGE["closed"])

    @property
    def state(self) -> BreakerState:
        """The state as of now: "closed", "half_open" or "open"."""
        if self._state == "open" and self._clock() >= self._opened_at + self._reset:
            self._set("half_open")
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state != "open":
            return 0.0
        return max(self._opened_at + self._reset - self._clock(), 0.0)

    def acquire(self) -> bool:
        """Admit a call, or raise IntegrationUnavailable at once without calling.

        Returns True when the admitted call is the half-open probe.
        """
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        if state == "open":
            raise IntegrationUnavailable(
                self.source,
                f"{self.source} is unavailable (circuit open)",
                retry_after=self.retry_after(),
            )
        # Half-open with the probe still out: its answer decides, everyone else waits.
        raise IntegrationUnavailable(self.source, f"{self.source} is unavailable (circuit open)")

    def record_success(self, probe: bool) -> None:
        """The provider answered."""
        if probe:
            self._probing = False
            self._failures = 0
            self._set("closed")
        elif self._state == "closed":
            self._failures = 0
        # A call admitted before the breaker opened says nothing about the provider now;
        # only the probe may close an open breaker.

    def record_failure(self, probe: bool) -> None:
        """The provider failed (5xx, timeout, connection error)."""
        if probe:
            self._probing = False
            self._open()
        elif self._state == "closed":
            self._failures += 1
            if self._failures >= self._threshold:
                self._open()

    def release(self, probe: bool) -> None:
        """The admitted call never reached the provider (throttled, cancelled)."""
        if probe:
            # Still half-open: the next caller becomes the probe.
            self._probing = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._set("open")

    def _set(self, state: BreakerState) -> None:
        if state != self._state:
            # Transitions are rare and are what an operator reads during an outage.
            log.log(
                logging.WARNING if state == "open" else logging.INFO,
                "circuit breaker of %s is now %s",
                self.source,
                state,
                extra={"provider": self.source, "breaker": state},
            )
        self._state = state
        BREAKER_STATE.labels(self.source).set(_GAUGE[state])
