"""Self-tests of ``tests/faults.py`` on raw apsw, and what SQLite does under I/O errors.

The sweeps are SQLite's own I/O-error loop (https://sqlite.org/testing.html §3.2) applied to
a WAL database with ``synchronous=FULL``: run a scenario once to count its writes, syncs and
truncates, then rerun it failing the k-th one, for every k, once and persistently. After
each run the file is reopened through the default VFS and must pass ``integrity_check``,
hold every transaction whose COMMIT returned, and hold no part of any other: a transaction
whose COMMIT raised may be all there (an "ambiguous" commit, counted) or absent, never half.

Ambiguous commits do happen, and only in one way: the fsync of a COMMIT fails after all its
frames were written, the disk stays bad, so the closing checkpoint fails and the WAL is
kept; the next open replays the commit. The last two tests pin that, and an apsw quirk that
fault tests of localq (T2 in reference/reliability.md §7) must allow for.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import apsw
import pytest

from tests.faults import OPS, FaultVFS, open_with

#: SQLite's I/O, through an apsw VFS (no PostgreSQL counterpart).
pytestmark = pytest.mark.sqlite_only


Rows = dict[tuple[int, int], bytes]

# --- the scenario ------------------------------------------------------------------------


def _body(txn: int, seq: int, size: int, version: int = 0) -> bytes:
    """Return a row's payload: deterministic, so that every run does the same I/O."""
    digest = hashlib.sha256(f"{txn}/{seq}/{version}".encode()).digest()
    return (digest * (size // len(digest) + 1))[:size]


@dataclass(frozen=True)
class _Txn:
    """One transaction: its statements, and what it does to the model when it commits."""

    number: int
    statements: list[tuple[str, tuple[object, ...]]]
    apply: Callable[[Rows], Rows]


def _inserts(txn: int, count: int, size: int) -> _Txn:
    rows = {(txn, seq): _body(txn, seq, size) for seq in range(count)}
    sql = "INSERT INTO rows(txn, seq, body) VALUES (?, ?, ?)"
    return _Txn(txn, [(sql, (t, s, b)) for (t, s), b in rows.items()], lambda m: {**m, **rows})


def _txn_update_and_insert() -> _Txn:
    # Rewrites transaction 1's rows and adds two: a half-applied commit would show up as
    # old and new bodies side by side, not only as missing rows.
    base = _inserts(2, 2, 1500)
    new = {(1, seq): _body(1, seq, 1500, version=1) for seq in range(3)}
    update = "UPDATE rows SET body = ? WHERE txn = ? AND seq = ?"

    def apply(model: Rows) -> Rows:
        model = base.apply(model)
        return {**model, **{key: body for key, body in new.items() if key in model}}

    statements = base.statements + [(update, (b, t, s)) for (t, s), b in new.items()]
    return _Txn(2, statements, apply)


def _txn_delete_and_insert() -> _Txn:
    base = _inserts(4, 2, 800)

    def apply(model: Rows) -> Rows:
        kept = {key: body for key, body in model.items() if not (key[0] == 3 and key[1] % 2 == 0)}
        return base.apply(kept)

    delete = ("DELETE FROM rows WHERE txn = 3 AND seq % 2 = 0", ())
    return _Txn(4, [delete, *base.statements], apply)


_CHECKPOINT = "PRAGMA wal_checkpoint(TRUNCATE)"
# The steps, in order: transactions and a checkpoint (which writes the database file,
# syncs it and truncates both files). Transaction 3 is larger than the 10-page cache, so
# SQLite spills uncommitted frames into the WAL during its INSERTs: faults then hit
# statements inside the transaction, not only COMMIT.
SCENARIO: list[_Txn | str] = [
    _inserts(1, 3, 1500),
    _txn_update_and_insert(),
    _CHECKPOINT,
    _inserts(3, 12, 3000),
    _txn_delete_and_insert(),
]
TXNS = [step for step in SCENARIO if isinstance(step, _Txn)]


@dataclass
class _Outcome:
    acknowledged: list[int] = field(default_factory=list)  # COMMIT returned
    commit_failed: list[int] = field(default_factory=list)  # COMMIT raised: all or nothing
    errors: list[BaseException] = field(default_factory=list)
    txn_failed_after_transient: bool = False
    close_failed: bool = False


def _execute(conn: apsw.Connection, sql: str, params: tuple[object, ...] = ()) -> None:
    # fetchall(): apsw runs a statement lazily, and a PRAGMA that returns rows would
    # otherwise stop at its first row.
    conn.execute(sql, params).fetchall()


def _run(conn: apsw.Connection, outcome: _Outcome) -> None:
    """Run SCENARIO on *conn*, recording what returned and what raised."""
    for step in SCENARIO:
        if isinstance(step, str):
            try:
                _execute(conn, step)
            except (apsw.IOError, apsw.FullError) as exc:
                outcome.errors.append(exc)
            continue
        stage = "body"
        try:
            _execute(conn, "BEGIN IMMEDIATE")
            for sql, params in step.statements:
                _execute(conn, sql, params)
            stage = "commit"
            _execute(conn, "COMMIT")
        except (apsw.IOError, apsw.FullError) as exc:
            if outcome.errors:
                outcome.txn_failed_after_transient = True
            outcome.errors.append(exc)
            if stage == "commit":
                outcome.commit_failed.append(step.number)
            # SQLite may have rolled back only the statement: end the transaction, as the
            # application must (reliability.md §1.5).
            if conn.in_transaction:
                _execute(conn, "ROLLBACK")
        else:
            outcome.acknowledged.append(step.number)


def _model(applied: set[int]) -> Rows:
    model: Rows = {}
    for txn in TXNS:
        if txn.number in applied:
            model = txn.apply(model)
    return model


def _check(path: str, outcome: _Outcome) -> bool:
    """Reopen *path* through the default VFS and check it; return whether a failed COMMIT
    turned out to be applied (ambiguous)."""
    conn = apsw.Connection(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        rows = conn.execute("SELECT txn, seq, body FROM rows").fetchall()
    finally:
        conn.close()
    observed = {(txn, seq): bytes(cast(bytes, body)) for txn, seq, body in rows}
    assert len(observed) == len(rows), "duplicate (txn, seq)"
    acked = set(outcome.acknowledged)
    for extra in _subsets(outcome.commit_failed):
        if _model(acked | extra) == observed:
            return bool(extra)
    raise AssertionError(
        f"state is not acknowledged {sorted(acked)} plus whole failed commits "
        f"{outcome.commit_failed}: rows {sorted(observed)}"
    )


def _subsets(items: list[int]) -> Iterator[set[int]]:
    for size in range(len(items) + 1):
        for combination in itertools.combinations(items, size):
            yield set(combination)


# --- the sweeps --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed WAL database holding the schema; each run starts from a copy of it."""
    path = tmp_path_factory.mktemp("faults") / "template.db"
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    _execute(conn, "CREATE TABLE rows(id INTEGER PRIMARY KEY, txn INT, seq INT, body BLOB)")
    _execute(conn, "CREATE UNIQUE INDEX rows_key ON rows(txn, seq)")
    conn.close()  # the last close checkpoints and deletes -wal: the copy is one file
    return path


@dataclass
class _SweepStats:
    points: int = 0
    raised: int = 0
    ambiguous: int = 0
    swallowed: int = 0  # faults injected that no statement reported
    failed_after_transient: int = 0


def _one_run(template: Path, path: Path, vfs: FaultVFS, arm: Callable[[], None]) -> _Outcome:
    shutil.copyfile(template, path)
    outcome = _Outcome()
    conn = open_with(vfs, str(path))
    try:
        _execute(conn, "PRAGMA synchronous=FULL")  # a sync at every commit: more points
        _execute(conn, "PRAGMA cache_size=10")  # spill transaction 3 mid-way
        arm()
        _run(conn, outcome)
        # Closing runs a checkpoint through the armed VFS: its faults are part of the
        # sweep, and SQLite then keeps the WAL for the next open to recover from. SQLite
        # ignores a failed checkpoint at close, but apsw still raises the VFS's exception
        # from close(); the connection is closed all the same.
        try:
            conn.close()
        except (apsw.IOError, apsw.FullError) as exc:
            outcome.errors.append(exc)
            outcome.close_failed = True
    finally:
        conn.close()  # a no-op once closed; releases the file if _run() raised
        vfs.disarm()
    with pytest.raises(apsw.ConnectionClosedError):
        conn.execute("SELECT 1")
    return outcome


SWEEPS = [
    pytest.param("write", apsw.SQLITE_IOERR_WRITE, False, id="write-ioerr"),
    pytest.param("write", apsw.SQLITE_FULL, True, id="write-full-torn"),
    pytest.param("sync", apsw.SQLITE_IOERR_FSYNC, False, id="sync-ioerr"),
    pytest.param("truncate", apsw.SQLITE_IOERR_TRUNCATE, False, id="truncate-ioerr"),
    pytest.param("any", apsw.SQLITE_FULL, False, id="any-full"),
]


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
@pytest.mark.parametrize(("op", "error", "torn"), SWEEPS)
def test_every_fault_point_leaves_a_consistent_file_with_every_acknowledged_commit(
    template: Path,
    tmp_path: Path,
    op: Literal["write", "sync", "truncate", "any"],
    error: int,
    torn: bool,
    persistent: bool,
) -> None:
    path = tmp_path / "q.db"
    stats = _SweepStats()
    # No real fsync: these runs test what SQLite does with error codes, not durability,
    # and some 10,000 fsyncs would make the disk's latency the test's duration.
    with FaultVFS(sync_to_disk=False) as vfs:
        clean = _one_run(template, path, vfs, vfs.reset)
        points = vfs.counts[op]
        assert not clean.errors and clean.acknowledged == [t.number for t in TXNS]
        assert _check(str(path), clean) is False
        assert points > 0

        for k in range(1, points + 1):
            def arm(k: int = k) -> None:
                vfs.arm(op=op, k=k, error=error, persistent=persistent, torn=torn)

            outcome = _one_run(template, path, vfs, arm)
            context = f"{op} #{k} of {points}, injected {vfs.injected[:1]}, {outcome}"
            assert vfs.injected, context
            assert len(vfs.injected) == 1 or persistent, context
            stats.points += 1
            stats.raised += bool(outcome.errors)
            stats.swallowed += not outcome.errors
            stats.failed_after_transient += outcome.txn_failed_after_transient
            try:
                stats.ambiguous += _check(str(path), outcome)
            except AssertionError as exc:
                raise AssertionError(f"{context}: {exc}") from exc
            if not persistent:
                # A transient fault costs at most the transaction it hit.
                assert not outcome.txn_failed_after_transient, context
                assert len(outcome.acknowledged) >= len(TXNS) - 1, context

    code = apsw.mapping_extended_result_codes.get(error) or apsw.mapping_result_codes[error]
    print(f"\n{op}/{code}"
          f"{'/torn' if torn else ''}/{'persistent' if persistent else 'once'}: {stats}")
    assert stats.points == points
    assert stats.swallowed == 0, "a fault no statement reported"
    if op in ("write", "truncate") or not persistent:
        # A failed write leaves no complete commit frame, and after a transient fault the
        # next transaction overwrites the failed one's frames: nothing to resurrect.
        assert stats.ambiguous == 0, "a COMMIT that raised was applied"
    # A failed fsync of a COMMIT whose frames were all written, followed by a close that
    # cannot checkpoint, leaves a valid commit in the WAL: the next open replays it (see
    # test_a_commit_whose_fsync_failed_is_replayed_after_a_restart).


# --- the FaultVFS itself -----------------------------------------------------------------


@pytest.fixture
def vfs() -> Iterator[FaultVFS]:
    with FaultVFS() as fault_vfs:
        yield fault_vfs


def _wal_db(vfs: FaultVFS, path: Path) -> apsw.Connection:
    conn = open_with(vfs, str(path))
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    _execute(conn, "PRAGMA synchronous=FULL")
    _execute(conn, "CREATE TABLE t(x)")
    return conn


def test_it_registers_under_a_unique_name_and_unregisters_on_exit() -> None:
    with FaultVFS() as first, FaultVFS() as second:
        assert first.vfs_name != second.vfs_name
        assert {first.vfs_name, second.vfs_name} <= set(apsw.vfs_names())
    assert first.vfs_name not in apsw.vfs_names()
    assert second.vfs_name not in apsw.vfs_names()


def test_wal_works_through_it_and_every_op_is_counted(vfs: FaultVFS, tmp_path: Path) -> None:
    conn = _wal_db(vfs, tmp_path / "q.db")
    vfs.reset()
    _execute(conn, "INSERT INTO t VALUES (1)")
    _execute(conn, _CHECKPOINT)
    conn.close()

    assert (tmp_path / "q.db-wal").exists() is False  # the last close checkpointed
    assert set(vfs.counts) == {*OPS, "any"}
    assert min(vfs.counts[op] for op in OPS) >= 1
    assert vfs.counts["any"] == sum(vfs.counts[op] for op in OPS) == len(vfs.trace)
    assert {file for _, file in vfs.trace} == {"q.db", "q.db-wal"}


def test_a_once_fault_fails_only_the_kth_op_and_names_itself(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    conn = _wal_db(vfs, tmp_path / "q.db")
    vfs.arm(op="sync", k=1, error=apsw.SQLITE_IOERR_FSYNC, persistent=False)

    with pytest.raises(apsw.IOError, match=r"SQLITE_IOERR_FSYNC injected at sync #1") as caught:
        _execute(conn, "INSERT INTO t VALUES (1)")
    # The stubs of apsw 3.54.1.0 do not declare extendedresult, though every error has it.
    assert getattr(caught.value, "extendedresult") == apsw.SQLITE_IOERR_FSYNC
    _execute(conn, "INSERT INTO t VALUES (2)")
    assert [(i.op, i.n) for i in vfs.injected] == [("sync", 1)]
    assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]
    conn.close()


def test_a_persistent_fault_fails_every_op_from_k_until_disarmed(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    conn = _wal_db(vfs, tmp_path / "q.db")
    vfs.arm(op="write", k=1, error=apsw.SQLITE_FULL, persistent=True)

    for value in range(3):
        with pytest.raises(apsw.FullError):
            _execute(conn, "INSERT INTO t VALUES (?)", (value,))
    assert len(vfs.injected) == 3
    vfs.disarm()
    _execute(conn, "INSERT INTO t VALUES (9)")
    assert vfs.counts["write"] > 3  # counting goes on after disarm()
    assert conn.execute("SELECT x FROM t").fetchall() == [(9,)]
    conn.close()


def test_any_counts_writes_syncs_and_truncates_together(vfs: FaultVFS, tmp_path: Path) -> None:
    conn = _wal_db(vfs, tmp_path / "dry.db")
    vfs.reset()
    _execute(conn, "INSERT INTO t VALUES (1)")
    conn.close()
    # The first sync comes after the commit's writes, so its number among all ops is > 1.
    first_sync = [op for op, _ in vfs.trace].index("sync") + 1
    assert first_sync > 1

    conn = _wal_db(vfs, tmp_path / "q.db")
    vfs.arm(op="any", k=first_sync, error=apsw.SQLITE_IOERR_FSYNC, persistent=False)
    with pytest.raises(apsw.IOError):
        _execute(conn, "INSERT INTO t VALUES (1)")
    assert [(i.op, i.n) for i in vfs.injected] == [("sync", first_sync)]
    conn.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"op": "read", "k": 1, "error": apsw.SQLITE_IOERR_WRITE},
        {"op": "write", "k": 0, "error": apsw.SQLITE_IOERR_WRITE},
        {"op": "write", "k": 1, "error": 200},
    ],
)
def test_arm_rejects_bad_arguments(vfs: FaultVFS, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        vfs.arm(persistent=False, **kwargs)  # type: ignore[arg-type]


# --- what SQLite and apsw do, pinned for the localq fault tests built on this -------------


def test_a_commit_whose_fsync_failed_is_replayed_after_a_restart(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    """A failed COMMIT is not always absent: its outcome is unknown until the next open.

    The commit's frames all reached the WAL; only the fsync failed. SQLite rolls the
    transaction back in memory, so live readers never see it, but with the disk still
    failing the closing checkpoint fails too, the WAL stays, and recovery replays every
    frame with a valid checksum. (A crash right after the failed COMMIT does the same.)
    localq must call a failed write's outcome unknown, never "not stored".
    """
    path = str(tmp_path / "q.db")
    conn = _wal_db(vfs, tmp_path / "q.db")
    _execute(conn, "INSERT INTO t VALUES (1)")
    vfs.arm(op="sync", k=1, error=apsw.SQLITE_IOERR_FSYNC, persistent=True)

    _execute(conn, "BEGIN IMMEDIATE")
    _execute(conn, "INSERT INTO t VALUES (2)")
    with pytest.raises(apsw.IOError):
        _execute(conn, "COMMIT")
    assert not conn.in_transaction
    reader = apsw.Connection(path)
    assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]
    reader.close()
    with pytest.raises(apsw.IOError):
        conn.close()  # the checkpoint's fsync fails as well
    vfs.disarm()

    reopened = apsw.Connection(path)
    assert reopened.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    assert reopened.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    reopened.close()


def test_apsw_raises_a_checkpoint_fault_that_sqlite_ignored_from_the_commit(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    """Under a Python VFS an auto-checkpoint fault makes a successful COMMIT raise.

    SQLite runs the auto-checkpoint after the commit and ignores its result, so with the C
    VFS the statement succeeds; apsw keeps the exception raised in the VFS and raises it
    when the statement returns. Fault tests must disable auto-checkpoints
    (``PRAGMA wal_autocheckpoint=0``) or accept a raised-but-committed write there.
    """
    conn = _wal_db(vfs, tmp_path / "q.db")
    _execute(conn, "PRAGMA wal_autocheckpoint=1")
    # The first truncate of a commit is the checkpoint's: it trims the database file.
    vfs.arm(op="truncate", k=1, error=apsw.SQLITE_IOERR_TRUNCATE, persistent=False)

    with pytest.raises(apsw.IOError):
        _execute(conn, "INSERT INTO t VALUES (1)")
    assert [(i.op, i.file) for i in vfs.injected] == [("truncate", "q.db")]
    assert not conn.in_transaction
    reader = apsw.Connection(str(tmp_path / "q.db"))
    assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]
    reader.close()
    conn.close()
