"""The pytest plugin installed with localq (entry point ``pytest11``).

Fixtures:

* ``localq_queue``: a fresh :class:`localq.Queue` named ``"test"`` on a file in the test's
  ``tmp_path``, with a :class:`localq.testing.FakeClock` (``localq_queue.clock``); closed
  after the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .queue import Queue
from .testing import FakeClock


@pytest.fixture
def localq_queue(tmp_path: Path) -> Iterator[Queue]:
    """Yield a fresh queue on ``tmp_path / "localq.db"`` driven by a FakeClock (``localq_queue.clock``)."""
    clock = FakeClock()
    queue = Queue("test", path=tmp_path / "localq.db", clock=clock)
    try:
        yield queue
    finally:
        queue.close()
