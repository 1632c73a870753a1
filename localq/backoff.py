"""How long a failed job waits before its next attempt (pure: no I/O, no clock).

Exponential backoff follows API.md (and BullMQ): ``delay``, ``2·delay``, ``4·delay``, ...
(Bull 3 used ``(2^n - 1)·delay``). A custom strategy is looked up by name in the failing
worker's ``settings["backoff_strategies"]`` and returns seconds, ``0`` (retry now) or ``-1``
(fail now).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

__all__ = ["retry_delay_ms"]


def retry_delay_ms(backoff: Mapping[str, Any] | None, attempts_made: int, err: BaseException,
                   strategies: Mapping[str, Callable[[int, BaseException], float]]
                   ) -> tuple[int | None, str | None]:
    """Return the wait before the next attempt, in ms, and a note for the failure reason.

    :param backoff: the job's validated ``backoff`` option (None: retry at once).
    :param attempts_made: failed attempts including this one (>= 1).
    :param err: the error of this attempt (passed to custom strategies).
    :param strategies: the worker's ``settings["backoff_strategies"]``.
    :returns: ``(ms, None)`` to retry after ms (0: at once), or ``(None, note)`` to fail now;
        *note* says why when it was not the strategy's own choice.
    """
    if not backoff:
        return 0, None
    kind, delay = backoff["type"], float(backoff.get("delay", 0))
    if kind == "fixed":
        return int(delay * 1000), None
    if kind == "exponential":
        return int(delay * 1000 * 2 ** (attempts_made - 1)), None
    strategy = strategies.get(kind)
    if strategy is None:
        return None, (f"backoff strategy {kind!r} is not in this worker's"
                      " settings['backoff_strategies']")
    try:
        seconds = strategy(attempts_made, err)
    except Exception as exc:  # user code: its failure must not lose the job
        return None, f"backoff strategy {kind!r} raised {exc.__class__.__name__}: {exc}"
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        return None, f"backoff strategy {kind!r} returned {seconds!r}, not seconds"
    if seconds == -1:
        return None, None
    if seconds < 0 or math.isinf(seconds):
        return None, f"backoff strategy {kind!r} returned {seconds!r}: use seconds >= 0 or -1"
    return int(seconds * 1000), None
