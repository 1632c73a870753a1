"""A real full disk: a 1 MiB tmpfs, and a file-size limit (RLIMIT_FSIZE) in a subprocess.

Enqueue until the disk refuses: the error is a :class:`localq.DatabaseError` that says what
happened, every add that returned is in the file, and once space is back (a filler file
deleted, the limit raised) the same Queue object adds, claims and completes again: no
restart, no repair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import localq
from tests.reliability.checks import check_file, check_invariants, read_jobs

# A full file system under the queue file; a server's full disk is its own (pg/errors.py
# translates DiskFull), and the session-loss twin is in tests/pg/test_pg_reliability.py.
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = "x" * 2000


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted under tmp_path (skipped where mounting is not allowed)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("tmpfs mounts are Linux-only")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(q: localq.Queue) -> tuple[list[str], localq.DatabaseError]:
    """Add jobs until the disk refuses one; return the acknowledged ids and the error."""
    acked: list[str] = []
    for i in range(10_000):
        try:
            acked.append(q.add({"i": i, "pad": PAYLOAD}).id)
        except localq.DatabaseError as exc:
            return acked, exc
    raise AssertionError("the disk never filled up")


def test_a_full_tmpfs_raises_a_clear_error_loses_nothing_and_recovers_when_space_is_freed(
    small_fs: Path,
) -> None:
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * 256 * 1024)
    path = small_fs / "q.db"
    with localq.Queue("q", path=path) as q:
        acked, error = _fill(q)
        assert len(acked) > 10
        assert "disk full" in str(error) and str(path) in str(error), error
        assert error.path == str(path)
        # Still full: every write keeps failing cleanly, the readers keep working.
        with pytest.raises(localq.DatabaseError, match="disk full"):
            q.add_bulk([{"data": {"pad": PAYLOAD}}] * 20)
        assert q.count() == len(acked)

        filler.unlink()
        more = [q.add({"after": i}).id for i in range(20)]
        job = q.get_next_job()
        assert job is not None and job.id == acked[0]
        job.move_to_completed("done", not_fetch=True)
    check_file(str(path))
    jobs = check_invariants(str(path))
    assert set(jobs) == set(acked) | set(more)
    assert all(jobs[i].data == {"i": n, "pad": PAYLOAD} for n, i in enumerate(acked))
    assert jobs[acked[0]].state == "completed"


_CHILD = textwrap.dedent("""
    import json, resource, sys
    import localq

    path, limit = sys.argv[1], int(sys.argv[2])
    q = localq.Queue("q", path=path)
    q.add({"first": True})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    acked, error = [], None
    for i in range(100_000):
        try:
            acked.append(q.add({"i": i, "pad": "x" * 2000}).id)
        except localq.LocalqError as exc:
            error = exc
            break
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    after = [q.add({"after": i}).id for i in range(20)]
    job = q.get_next_job()
    job.move_to_completed("done", not_fetch=True)
    q.close()
    print(json.dumps({"acked": acked, "after": after, "type": type(error).__name__,
                      "error": str(error), "cause": type(error.__cause__).__name__}))
""")


@pytest.mark.slow
def test_a_file_size_limit_raises_a_clear_error_and_the_queue_resumes_when_it_is_raised(
    tmp_path: Path,
) -> None:
    resource = pytest.importorskip("resource")
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[1] != 0
    path = tmp_path / "q.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # SIGXFSZ would kill the child; Python ignores it at startup, so write() gets EFBIG.
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(512 * 1024)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["type"] == "DatabaseError", report
    assert str(path) in report["error"] and "nothing of this call was stored" in report["error"]
    assert len(report["acked"]) > 10
    check_file(str(path))
    jobs = check_invariants(str(path))
    assert set(report["acked"]) | set(report["after"]) <= set(jobs)
    assert len(jobs) == 1 + len(report["acked"]) + len(report["after"])
    assert [j for j in read_jobs(str(path)).values() if j.state == "completed"][0].data == {
        "first": True}
