"""Text stored as it is, not as JSON: job names, custom job ids, log rows, failure reasons.

JSON payloads (data, results, progress, options) escape every character, so any str round
trips through them. Plain text columns cannot hold everything: a lone surrogate is not valid
Unicode (neither SQLite nor PostgreSQL takes it as UTF-8), and PostgreSQL text cannot hold
the NUL character at all (its values are C strings); SQLite stores NUL like any character.

Text a caller gives (a name, an id, a log row) is refused with a :class:`ConfigError` that
names it: nothing is stored. A failure reason is never refused (a worker writes one for any
exception, and a lost failure would leave the job running until it stalls): it keeps every
character the database can hold and spells the others as Python escapes (``\\udc80``,
``\\x00``); the stack trace, stored as JSON, keeps them all.

Each function takes *nul*: whether the database holds NUL
(:attr:`localq.backend.Backend.nul_in_text`).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

__all__ = ["check_text", "findable", "holds_nul", "storable"]


def _problem(value: str, nul: bool) -> str | None:
    """Return why *value* cannot be stored as text, or None if it can."""
    if value.isascii():  # the common case, checked without a copy
        return None if nul or "\x00" not in value else "NUL"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "surrogate"
    return None if nul or "\x00" not in value else "NUL"


def check_text(value: str, what: str, *, nul: bool) -> str:
    """Return *value* if the database can store it as text.

    :param what: what the value is, for the message (``"job_id"``, ``"log row"``, ...).
    :param nul: whether the database holds the NUL character.
    :raises ConfigError: *value* holds a lone surrogate, or NUL where *nul* is False.
    """
    problem = _problem(value, nul)
    if problem == "surrogate":
        raise ConfigError(f"{what} {value[:60]!r} contains a lone surrogate character, which is"
                          " not valid Unicode: remove it, or decode the bytes it came from"
                          " with errors='replace'")
    if problem == "NUL":
        raise ConfigError(f"{what} {value[:60]!r} contains the NUL character '\\x00', which"
                          " PostgreSQL text cannot hold: remove it (only SQLite queues store it)")
    return value


def findable(value: str, *, nul: bool) -> bool:
    """Return whether a stored name, id or key can equal *value* (a lookup by anything else
    finds nothing, and is not sent to the database, which would refuse it)."""
    return _problem(value, nul) is None


def storable(value: str, *, nul: bool) -> str:
    """Return *value* with what the database cannot hold written as Python escapes
    (``'\\udc80'``, and ``'\\x00'`` where *nul* is False)."""
    problem = _problem(value, nul)
    if problem is None:
        return value
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if nul else value.replace("\x00", "\\x00")


def holds_nul(value: Any) -> bool:
    """Return whether a JSON-like *value* (str, list, dict keys and values) holds NUL."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(holds_nul(v) for v in value)
    return False
