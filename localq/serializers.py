"""Strict JSON encoding of job data, return values, progress and event payloads.

JSON only, never pickle: a queue file that someone else can write must never become code
execution (huey#818, rq#2389). ``allow_nan=False`` keeps the stored text strict JSON, and a
size cap turns an accidental multi-megabyte payload into a clear error instead of a slow queue.
"""

from __future__ import annotations

import json
from typing import Any, Union

from .errors import DatabaseError, SerializationError

__all__ = ["JsonValue", "MAX_DATA_BYTES", "dumps", "loads"]

#: Any value strict JSON can hold (what job data, results and progress may be).
JsonValue = Union[None, bool, int, float, str, list[Any], dict[str, Any]]

#: Default cap on one encoded payload (data, result, progress); ``settings["max_data_bytes"]``
#: changes it. 1 MiB keeps rows well inside one overflow chain and far below SQLite's 1 GB limit.
MAX_DATA_BYTES = 1024 * 1024

_encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def dumps(value: object, *, what: str = "data", limit: int = MAX_DATA_BYTES) -> str:
    """Encode *value* as strict JSON text.

    :param value: the value to encode.
    :param what: what the value is, for the error message ("data", "return value", ...).
    :param limit: the largest accepted encoding, in UTF-8 bytes.
    :returns: the JSON text.
    :raises SerializationError: the value is not strict JSON, or is larger than *limit*.
    """
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"{what} is not strict JSON ({_why(exc)}): use dicts, lists, str, int, finite float,"
            " bool and None only (convert sets to lists, bytes to str, datetimes to numbers)"
        ) from exc
    try:
        # ASCII text (most payloads) is its own UTF-8 encoding: no copy needed to measure it.
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"{what} contains a lone surrogate character, which is not valid Unicode: "
            "remove it or encode the text first"
        ) from exc
    if size > limit:
        raise SerializationError(
            f"{what} is {size} bytes of JSON, over the {limit}-byte cap: store large payloads in"
            " a file and queue its path, or raise settings['max_data_bytes']"
        )
    if "{" in text:
        _check_keys(value, what)
    return text


#: Value types that hold no dict (the usual payload: a flat dict of these).
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def _check_keys(value: object, what: str) -> None:
    """Refuse dict keys that are not str (the encoder turns ``{1: "a"}`` into ``{"1": "a"}``
    without a word, so the job would read back other data than was queued).

    Runs after a successful encoding: the value is known to be finite and acyclic.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            # Checked in C first (the types of the keys and values of a flat dict): walking
            # the items in Python cost more than the INSERT of an add_bulk entry.
            if not _STR.issuperset(map(type, item)):
                _check_dict_keys(item, what)
            if _SCALARS.issuperset(map(type, item.values())):
                continue
            stack.extend(child for child in item.values()
                         if isinstance(child, (dict, list, tuple)))
        elif isinstance(item, dict):
            _check_dict_keys(item, what)
            stack.extend(child for child in item.values()
                         if isinstance(child, (dict, list, tuple)))
        elif isinstance(item, (list, tuple)):
            stack.extend(child for child in item if isinstance(child, (dict, list, tuple)))


def _check_dict_keys(item: dict[Any, Any], what: str) -> None:
    for key in item:
        if not isinstance(key, str):
            read_back = next(iter(json.loads(_encoder.encode({key: 0}))))
            raise SerializationError(
                f"{what} is not strict JSON (a dict key is {type(key).__name__} {key!r},"
                " and JSON object keys are strings: it would read back as"
                f" {read_back!r}):"
                " convert the keys to str before queuing")


def loads(text: object, *, path: str) -> Any:
    """Decode stored JSON text (``None`` stays ``None``).

    :param path: the database the text was read from, for the error message.
    :raises DatabaseError: the text does not decode: the file is damaged (localq stores
        strict JSON only).
    """
    if text is None:
        return None
    try:
        if not isinstance(text, str):
            # A damaged record header can turn a TEXT column into a number or a blob.
            raise TypeError(f"a {type(text).__name__} where JSON text was stored")
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        raise DatabaseError(
            f"{path!r} is corrupt: a stored value does not decode ({exc.__class__.__name__}:"
            f" {exc}): restore it from a backup, or move it away to start a new queue",
            path=path) from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    message = str(exc)
    if "Out of range float" in message:
        return "NaN and Infinity are not JSON"
    if "Exceeds the limit" in message:
        return "an integer has too many digits"
    return message
