"""A private PostgreSQL server for the tests, or the one ``$LOCALQ_TEST_PG_URL`` names.

The tests never touch a packaged cluster (port 5432): :func:`start` runs ``initdb`` and
``pg_ctl`` in a temporary directory, on a free port of 127.0.0.1 and a private socket
directory, with fsync off (tests only; benchmarks start their own cluster with defaults).
``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` OS user
(``runuser -u postgres --``), which must own the data directory.

Under CI (``CI=true``) a server that cannot be had must fail the run, not skip it:
:func:`unavailable` says which of the two to do.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["ENV_URL", "PgServer", "drop_schema", "find_bin", "in_ci", "pg_server_url", "pg_url",
           "schema_url", "start", "wait_ready"]

#: Environment variable naming an existing server (e.g. the one .ci/postgres.sh starts).
ENV_URL = "LOCALQ_TEST_PG_URL"

_SETTINGS = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
             " -c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB")


def in_ci() -> bool:
    """Whether the run is a CI run (``CI=true``), where a missing server is a failure."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_bin(name: str) -> str | None:
    """Return the path of PostgreSQL program *name* (newest major version), or None."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Block until a connection to *url* succeeds.

    :raises TimeoutError: the server did not answer within *timeout* seconds.
    """
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                from localq.pg.url import redact

                raise TimeoutError(f"PostgreSQL at {redact(url)} did not accept connections"
                                   ) from None
            time.sleep(0.1)


@dataclass
class PgServer:
    """A running private server: its URL, directory and how to stop or restart it."""

    directory: str
    port: int
    pg_ctl: str
    #: Server options given to ``postgres`` (``-c name=value ...``).
    settings: str = _SETTINGS
    log: str = field(init=False)

    def __post_init__(self) -> None:
        self.log = os.path.join(self.directory, "server.log")

    @property
    def data(self) -> str:
        """The data directory."""
        return os.path.join(self.directory, "data")

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database as the ``postgres`` superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_server_user([self.pg_ctl, "-D", self.data, *args]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("-l", self.log, "-w", "-t", "60", "start",
                  "-o", f"-p {self.port} -k {self.directory} {self.settings}")
        wait_ready(self.url)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate)."""
        self._ctl("-w", "-t", "60", "stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (every session and its advisory locks end) and start it again."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server (if running) and remove its directory."""
        try:
            self.stop("immediate")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.directory, ignore_errors=True)


def start(settings: str = _SETTINGS) -> PgServer:
    """Create and start a private server in a new temporary directory.

    :param settings: the server options; the default turns fsync off (test data only), the
        benchmarks pass their own to measure with the server's durable defaults.

    :raises RuntimeError: PostgreSQL is not installed, or initdb / pg_ctl failed (with why).
    """
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in"
                           " /usr/lib/postgresql/*/bin): apt-get install postgresql, or set"
                           f" {ENV_URL}")
    directory = tempfile.mkdtemp(prefix="localq-pg-")
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError("running as root needs the 'postgres' OS user to run the"
                               " server (initdb refuses root)") from None
        os.chown(directory, user.pw_uid, user.pw_gid)
    os.chmod(directory, 0o700)
    server = PgServer(directory, _free_port(), pg_ctl, settings)
    try:
        subprocess.run(_as_server_user([initdb, "-D", server.data, "-U", "postgres", "-A",
                                        "trust", "-E", "UTF8", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=120)
        server.start()
    except subprocess.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip()
        server.destroy()
        raise RuntimeError(f"could not start a private PostgreSQL server: {err}") from exc
    except BaseException:
        server.destroy()
        raise
    return server


# -- pytest fixtures (imported by the conftest files that need a server) --------------------

def _unavailable(why: str) -> None:
    import pytest

    if in_ci():
        pytest.fail(f"CI=true but no PostgreSQL server for the pg tests: {why}", pytrace=False)
    pytest.skip(f"no PostgreSQL server for the pg tests ({why}); set {ENV_URL} or install"
                " postgresql (initdb/pg_ctl)")


def _server_url() -> Iterator[str]:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg / psycopg-pool not installed: pip install '.[postgres]'")
    url = os.environ.get(ENV_URL)
    if url:
        try:
            wait_ready(url, 10.0)
        except TimeoutError as exc:
            _unavailable(str(exc))
        yield url
        return
    try:
        server = start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        _unavailable(str(exc))
    try:
        yield server.url
    finally:
        server.destroy()


def schema_url(url: str, schema: str) -> str:
    """Return *url* with localq's ``schema`` parameter set to *schema*."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    """Drop *schema* and everything in it (test teardown)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def _fixtures() -> tuple[Any, Any]:
    import uuid

    import pytest

    @pytest.fixture(scope="session")
    def pg_server_url() -> Iterator[str]:
        """The URL of a PostgreSQL server for the whole run ($LOCALQ_TEST_PG_URL, or a private
        one started here); skipped without one, failed under CI=true."""
        yield from _server_url()

    @pytest.fixture
    def pg_url(pg_server_url: str) -> Iterator[str]:
        """A queue URL on a fresh schema of its own, dropped after the test."""
        schema = f"t_{uuid.uuid4().hex[:16]}"
        yield schema_url(pg_server_url, schema)
        drop_schema(pg_server_url, schema)

    return pg_server_url, pg_url


pg_server_url, pg_url = _fixtures()
