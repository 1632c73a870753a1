"""The state names of the public API, shared by both backends (the SQL behind them differs,
the names and what they accept must not)."""

from __future__ import annotations

__all__ = ["CLEAN_STATES", "STATES"]

#: The states ``get_jobs`` and ``get_job_counts`` take (``paused``: the waiting jobs of a
#: paused queue).
STATES = ("waiting", "active", "delayed", "completed", "failed", "paused")

#: The states ``clean()`` takes (Bull's names: ``wait`` and ``paused`` are the waiting jobs of a
#: running or a paused queue) and the stored state each one names.
CLEAN_STATES = {"completed": "completed", "failed": "failed", "waiting": "waiting",
                "wait": "waiting", "paused": "waiting", "delayed": "delayed", "active": "active"}
