"""The pytest plugin installed with localq (entry point ``pytest11``, so nothing to import).

Fixtures:

* ``localq_queue``: a fresh :class:`localq.Queue` named ``"test"`` on a new file in the
  test's ``tmp_path``, driven by a :class:`localq.testing.FakeClock` (``localq_queue.clock``),
  closed after the test::

      from localq.testing import run_until_idle

      def test_welcome_email_is_retried(localq_queue):
          localq_queue.add({"to": "ada@example.com"}, attempts=2, backoff=60)
          run_until_idle(localq_queue, flaky_send)     # first attempt fails
          localq_queue.clock.advance(60)               # the backoff passes, no sleep
          assert run_until_idle(localq_queue, flaky_send) == 1
          assert localq_queue.get_job_counts("completed") == {"completed": 1}

Where the plugin is not auto-loaded (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``), enable it with
``pytest -p localq.pytest_plugin`` or ``pytest_plugins = ["localq.pytest_plugin"]`` in a
``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["localq_queue"]


@pytest.fixture
def localq_queue(tmp_path: Path) -> Iterator[Queue]:
    """A fresh localq queue ``"test"`` on ``tmp_path / "localq.db"``, driven by a FakeClock.

    Move time with ``localq_queue.clock.advance(seconds)``: delays, backoff, repeats, lock
    expiry and ``clean(grace)`` follow it. Run jobs with
    ``localq.testing.run_until_idle(localq_queue, handler)``. The queue is closed after the test.
    """
    # Imported here, not at module level: pytest loads this plugin in every run of every
    # project where localq is installed, and those runs should not pay for importing apsw.
    from .queue import Queue
    from .testing import FakeClock

    queue = Queue("test", path=tmp_path / "localq.db", clock=FakeClock())
    try:
        yield queue
    finally:
        queue.close()
