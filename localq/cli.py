"""The ``localq`` command line (a first version: the quickstart run).

``python -m localq`` adds a few jobs to a queue in a temporary directory, processes them in
this process through the real claim / complete / fail path, and prints what happened.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the quickstart and return the exit code."""
    from .queue import Queue
    from .testing import run_until_idle

    argv = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp, Queue("demo", path=f"{tmp}/demo.db") as q:
        for i in range(20):
            q.add({"n": i}, attempts=2, priority=1 if i % 5 == 0 else None)

        def handler(job: object) -> int:
            n = job.data["n"]  # type: ignore[attr-defined]
            if n % 7 == 3 and job.attempts_made == 0:  # type: ignore[attr-defined]
                raise RuntimeError("flaky on the first attempt")
            return int(n) * n

        ran = run_until_idle(q, handler)
        print(f"ran {ran} attempts; counts: {q.get_job_counts()}")
    return 0
