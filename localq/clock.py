"""Where localq reads the time: every time decision goes through a :class:`Clock`.

Delays, backoff, lock expiry, ``clean(grace)`` and repeat schedules all ask the
queue's clock, so tests can use :class:`localq.testing.FakeClock` and never sleep.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "now_ms"]


@runtime_checkable
class Clock(Protocol):
    """Anything with a ``now()`` returning epoch seconds as a float."""

    def now(self) -> float:
        """Return the current time in epoch seconds."""


class SystemClock:
    """The wall clock (``time.time``)."""

    def now(self) -> float:
        """Return the current wall-clock time in epoch seconds."""
        return time.time()


def now_ms(clock: Clock) -> int:
    """Return the clock's time as integer epoch milliseconds (the stored unit)."""
    return int(clock.now() * 1000)
