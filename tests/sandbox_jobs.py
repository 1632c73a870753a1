"""Handlers for the sandbox tests, imported by name in spawned child processes."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import localq


def work(job: Any) -> Any:
    """Report progress, log, update the data and return the child's pid; obey the data."""
    data = job.data
    job.progress(50)
    rows = job.log(f"in child {os.getpid()}")
    if data.get("exit") is not None:
        os._exit(int(data["exit"]))
    if data.get("sleep"):
        time.sleep(float(data["sleep"]))
    if data.get("unrecoverable"):
        raise localq.UnrecoverableError("give up")
    if data.get("raise"):
        raise ValueError(data["raise"])
    if data.get("set"):
        return {1, 2}
    job.update({**data, "seen": True})
    return {"pid": os.getpid(), "rows": rows}


async def async_work(job: Any) -> str:
    """A coroutine handler."""
    await asyncio.sleep(0)
    return f"async {job.data['n']}"
