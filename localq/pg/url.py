"""PostgreSQL URLs: recognising them, localq's own query parameters, and hiding passwords.

A queue path that starts with ``postgresql://`` (or ``postgres://``) selects the PostgreSQL
backend. localq reads three query parameters of its own and passes the rest to libpq:

* ``schema`` (default ``localq``): the PostgreSQL schema that holds localq's tables;
* ``pool_size`` (default 20): the most connections one Queue opens for its transactions;
* ``listen`` (``on`` by default): ``off`` replaces LISTEN/NOTIFY wakeups by polling every
  ``poll_interval`` seconds (default 1), for transaction-pooling proxies such as PgBouncer
  that cannot carry LISTEN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["PgUrl", "is_postgres_url", "parse_url", "redact", "remember", "resolve"]

_SCHEMES = ("postgresql://", "postgres://")

#: URL as shown (password hidden) -> the URL itself, for the URLs this process opened: a
#: Queue's ``path`` is the shown URL (it appears in messages and reprs), and the lease and
#: leader-lock connections, given that path, connect with the real one.
_known: dict[str, str] = {}
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,49}\Z")


def is_postgres_url(path: object) -> bool:
    """Whether *path* names a PostgreSQL database rather than a file."""
    return isinstance(path, str) and path.lower().startswith(_SCHEMES)


def redact(url: str) -> str:
    """Return *url* with its password (in the netloc or a ``password=`` parameter) hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable PostgreSQL URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = [(k, "***" if k == "password" else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, quote_via=quote),
                       parts.fragment))


@dataclass(frozen=True)
class PgUrl:
    """A parsed queue URL."""

    #: The URL libpq gets (localq's parameters removed).
    conninfo: str
    #: The URL as shown in messages (password hidden).
    shown: str
    schema: str
    pool_size: int
    listen: bool
    poll_interval: float


def parse_url(url: str) -> PgUrl:
    """Split localq's parameters off a ``postgresql://`` URL.

    :raises ConfigError: a bad schema name, pool size, listen flag or poll interval.
    """
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("schema", "pool_size", "listen", "poll_interval"):
            ours[key] = value
        else:
            rest.append((key, value))
    shown = redact(url)
    schema = ours.get("schema", "localq")
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"schema={schema!r} in {shown}: use 1-50 lowercase letters, digits"
                          " and underscores, starting with a letter or underscore")
    try:
        pool_size = int(ours.get("pool_size", "20"))
        poll_interval = float(ours.get("poll_interval", "1"))
    except ValueError:
        raise ConfigError(f"pool_size must be an int and poll_interval a number of seconds"
                          f" in {shown}") from None
    if not 2 <= pool_size <= 1000:
        raise ConfigError(f"pool_size={pool_size} in {shown}: use 2 to 1000 connections")
    if not 0.01 <= poll_interval <= 60:
        raise ConfigError(f"poll_interval={poll_interval:g} in {shown}: use 0.01 to 60 s")
    listen = ours.get("listen", "on").lower()
    if listen not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"listen={listen!r} in {shown}: use on or off")
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path,
                           urlencode(rest, quote_via=quote), parts.fragment))
    return PgUrl(conninfo, shown, schema, pool_size, listen in ("on", "true", "1"),
                 poll_interval)


def remember(url: str) -> str:
    """Record *url* and return its shown form (password hidden), which :func:`resolve` maps
    back to *url* in this process."""
    shown = redact(url)
    _known[shown] = url
    return shown


def resolve(path: str) -> str:
    """Return the URL that the shown URL *path* stands for (itself if unknown)."""
    return _known.get(path, path)
