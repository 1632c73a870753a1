"""The ``localq`` command line: see and repair queues, run a worker, watch, and the demo.

``localq [--db PATH] COMMAND ...`` (or ``python -m localq``); ``--db`` defaults to
``$LOCALQ_PATH``, else ``./localq.db``. Every command goes through the public Queue API.
Bad input (bad JSON, an unknown job or queue, a bad option value, a missing or foreign file)
prints one ``localq: error: ...`` line on stderr and exits 1; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from . import cli_format as fmt
from . import states
from ._db import resolve_path
from .errors import ConfigError, JobNotFound, LocalqError
from .pg.url import is_postgres_url, redact
from .queue import Queue

__all__ = ["ADD_FLAGS", "EXIT_USAGE", "flag_name", "main"]

#: Exit status of a user error (argparse's own 2 included, so that scripts test one code).
EXIT_USAGE = 1
STATES = ("active", "waiting", "paused", "delayed", "failed", "completed")
_ASC = {"active": True, "waiting": True, "paused": True, "delayed": True,
        "failed": False, "completed": False}
#: Commands that may create the database file; the others need an existing one.
_CREATES = frozenset({"add", "worker"})


def _number_or_json(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return _json_arg(text, "the value")
    except ConfigError as exc:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(exc)) from None


#: ``localq add`` flags, keyed by the :class:`~localq.options.JobOptions` field each one sets
#: (``--job-id`` sets ``job_id``): type (None for a switch) and help. A test keeps the keys
#: in sync with JobOptions, so a renamed option cannot leave a dead flag behind.
ADD_FLAGS: dict[str, tuple[Callable[[str], Any] | None, str]] = {
    "name": (str, "job name (default __default__)"),
    "delay": (float, "seconds until the job may run"),
    "priority": (int, "1 is the highest; prioritised jobs run before the others"),
    "attempts": (int, "total attempts, >= 1 (default 1)"),
    "backoff": (_number_or_json, 'wait before a retry: seconds, or JSON such as'
                                 ' \'{"type": "exponential", "delay": 1}\''),
    "timeout": (float, "seconds after which a running attempt fails"),
    "lifo": (None, "run before the jobs waiting now (last in, first out)"),
    "job_id": (str, "custom id; if a job with that id exists, nothing is added"),
}


def flag_name(field: str) -> str:
    """Return the command-line flag of JobOptions field *field* (``job_id`` -> ``--job-id``)."""
    return "--" + field.replace("_", "-")


class _UsageError(Exception):
    """Bad command-line syntax (argparse's errors, raised instead of exiting)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _json_arg(text: str, what: str) -> Any:
    def refuse(name: str) -> NoReturn:
        raise ConfigError(f"{what} holds {name}, which is not strict JSON: use a number or null")
    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON ({exc.msg} at char {exc.pos}): quote it"
                          """ for the shell, e.g. '{"to": "ada@example.com"}'""") from None


def build_parser() -> argparse.ArgumentParser:
    """Return the ``localq`` argument parser."""
    from . import __version__
    db = _Parser(add_help=False)
    db.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                    help="the queue file (default: $LOCALQ_PATH, else ./localq.db)")
    parser = _Parser(prog="localq", parents=[db], description="Inspect, repair and run localq"
                     " queues (Bull's job model on one SQLite file).")
    parser.add_argument("--version", action="version", version=f"localq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, *, queue: str = "yes", json_out: bool = False
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[db])
        if queue != "no":
            p.add_argument("queue", metavar="QUEUE", nargs="?" if queue == "optional" else None)
        if json_out:
            p.add_argument("--json", action="store_true", help="print a JSON list of objects")
        return p

    command("queues", "list the queues of the file", queue="no", json_out=True)
    command("stats", "job counts per state and live workers (every queue, or QUEUE)",
            queue="optional",
            json_out=True)
    p = command("jobs", "list jobs: active, waiting, delayed, failed, completed", json_out=True)
    p.add_argument("--state", action="append", choices=STATES + ("wait",),
                   help="only this state (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="at most N jobs (default 50)")
    for name, help in (("show", "one job in detail"), ("logs", "a job's log rows"),
                       ("remove", "remove a job and its logs"),
                       ("promote", "run a delayed job now")):
        command(name, help, json_out=name in ("show", "logs")).add_argument("id", metavar="ID")
    p = command("add", "add a job", json_out=True)
    p.add_argument("data", metavar="DATA_JSON", help="the job's data as JSON, e.g. '{\"n\": 1}'")
    for field, (kind, help) in ADD_FLAGS.items():
        if kind is None:
            p.add_argument(flag_name(field), dest=field, action="store_true", default=None,
                           help=help)
        else:
            p.add_argument(flag_name(field), dest=field, type=kind, help=help,
                           metavar=field.split("_")[-1].upper())
    p = command("retry", "re-queue a failed job, or every failed job")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", metavar="ID", nargs="?")
    target.add_argument("--all", action="store_true", help="every failed job of the queue")
    p = command("clean", "remove old jobs of one state", json_out=True)
    p.add_argument("--grace", type=float, required=True, metavar="S",
                   help="keep jobs younger than S seconds")
    p.add_argument("--state", default="completed", choices=STATES + ("wait",),
                   help="(default completed; active: only jobs no live worker holds)")
    p.add_argument("--limit", type=int, default=0, help="at most N jobs (default 0: all)")
    command("pause", "stop every process from starting jobs of the queue")
    command("resume", "let the queue's jobs start again")
    p = command("worker", "process jobs with module:function until Ctrl-C / SIGTERM")
    p.add_argument("handler", metavar="module:function")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1)")
    p.add_argument("--sandbox", action="store_true", help="run each job in a child process")
    p.add_argument("--until-idle", action="store_true",
                   help="exit 0 once no job is runnable now (for cron-style scripts)")
    p = command("watch", "live view: counts, throughput, progress, failures",
                queue="optional")
    from .cli_watch import add_view_options
    add_view_options(p)
    p = command("demo", "add a few hundred jobs, run two worker processes, watch them",
                queue="no")
    from .demo import add_demo_options
    add_demo_options(p)
    return parser


# -- helpers -------------------------------------------------------------------------------

def db_path(args: argparse.Namespace, *, create: bool = False) -> str:
    """Return the database path of the command (``--db``, ``$LOCALQ_PATH``, ``./localq.db``).

    :raises ConfigError: the directory is missing, or the file (the URL's schema) is and
        *create* is False.
    :raises DatabaseError: the PostgreSQL server of a URL cannot be reached.
    """
    raw = getattr(args, "db", None) or os.environ.get("LOCALQ_PATH") or "localq.db"
    if is_postgres_url(raw):
        if not create:
            # Opening a queue creates its schema: a reading command must not (a typo in
            # ?schema= would leave an empty schema behind and report no queues).
            from .pg import require
            require()
            from .pg.probe import holds_tables
            if not holds_tables(raw):
                shown = redact(raw)
                raise ConfigError(f"no localq database at {shown}: its schema holds no"
                                  " tables; check ?schema= (default localq), or pass --db URL"
                                  " (or set $LOCALQ_PATH) of an existing queue; `localq add`"
                                  " creates one")
        return str(raw)
    path = resolve_path(raw)
    if not create and not os.path.exists(path):
        raise ConfigError(f"no localq database at {path!r}: pass --db PATH (or set"
                          " $LOCALQ_PATH) to an existing queue file; `localq add` creates one")
    return path


def _open(args: argparse.Namespace, name: str | None = None, *, known: bool = True) -> Queue:
    queue = Queue(name or "default", path=db_path(args, create=args.command in _CREATES))
    if name is not None and known:
        names = queue._q.queue_names(queue._store)
        if name not in names:
            queue.close()
            raise ConfigError(f"no queue {name!r} in {queue.path!r}; its queues:"
                              f" {', '.join(names) or '(none)'}")
    return queue


def _job(queue: Queue, job_id: str) -> Any:
    job = queue.get_job(job_id)
    if job is None:
        raise JobNotFound(job_id, f"no job {job_id!r} in queue {queue.name!r}"
                                  f" (see `localq jobs {queue.name}`)")
    return job


def _emit(args: argparse.Namespace, objects: list[dict[str, Any]], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(objects, indent=2, ensure_ascii=False))
    elif text:
        print(text)


def _counts(queue: Queue, name: str) -> dict[str, Any]:
    counts = queue._q.counts(queue._store, name, states.STATES)
    paused = bool(queue._store.query("SELECT 1 FROM queues WHERE name = :q AND paused = 1",
                                     {"q": name}))
    return {"queue": name, "is_paused": paused, **counts}


# -- commands ------------------------------------------------------------------------------

def _cmd_queues(args: argparse.Namespace) -> int:
    with _open(args) as q:
        stats = [_counts(q, name) for name in q._q.queue_names(q._store)]
    objs = [{"queue": s["queue"], "is_paused": s["is_paused"],
             "jobs": sum(s[k] for k in states.STATES)} for s in stats]
    _emit(args, objs, fmt.table(["QUEUE", "PAUSED", "JOBS"], [
        [o["queue"], "yes" if o["is_paused"] else "no", o["jobs"]] for o in objs])
        if objs else "no queues in this database")
    return 0


def _workers(queue: Queue, name: str) -> int:
    if name == queue.name:
        return len(queue.get_workers())
    with Queue(name, path=queue.path) as other:
        return len(other.get_workers())


def _cmd_stats(args: argparse.Namespace) -> int:
    with _open(args, args.queue) as q:
        names = [args.queue] if args.queue else q._q.queue_names(q._store)
        objs = [{**_counts(q, name), "workers": _workers(q, name)} for name in names]
    rows = [[o["queue"] + (" (paused)" if o["is_paused"] else "")]
            + [o[s] for s in (*states.STATES, "workers")] for o in objs]
    _emit(args, objs, fmt.table(["QUEUE", *(s.upper() for s in states.STATES), "WORKERS"],
                                rows) if objs else "no queues in this database")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, not {args.limit}")
    wanted = ["waiting" if s == "wait" else s for s in args.state or STATES]
    listed: list[tuple[Any, str]] = []
    with _open(args, args.queue) as q:
        now = q.clock.now()
        for state in dict.fromkeys(wanted):
            room = args.limit - len(listed)
            if room > 0:
                listed += [(j, state) for j in q.get_jobs([state], 0, room - 1, asc=_ASC[state])]
    objs = [{**job.to_dict(), "state": state} for job, state in listed]
    _emit(args, objs, fmt.table(fmt.JOB_HEADERS, [fmt.job_row(j, s, now) for j, s in listed])
          if listed else f"no jobs in {'/'.join(dict.fromkeys(wanted))}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with _open(args, args.queue) as q:
        job = _job(q, args.id)
        state = job.get_state()
        count = q.get_job_logs(job.id, 0, 0)["count"]
        now = q.clock.now()
        _emit(args, [{**job.to_dict(), "state": state, "log_count": count}],
              fmt.job_details(job, state, now, count))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    with _open(args, args.queue) as q:
        job = _job(q, args.id)
        rows = q.get_job_logs(job.id)["logs"]
    _emit(args, [{"id": job.id, "index": i, "row": r} for i, r in enumerate(rows)],
          "\n".join(rows) if rows else f"job {job.id} has no log rows")
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    data = _json_arg(args.data, "DATA_JSON")
    opts = {f: getattr(args, f) for f in ADD_FLAGS if getattr(args, f) is not None}
    with _open(args, args.queue, known=False) as q:
        job = q.add(data, **opts)
        state = job.get_state()
        _emit(args, [{**job.to_dict(), "state": state}],
              f"job {job.id} in queue {q.name!r}: {state}")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    with _open(args, args.queue) as q:
        if args.all:
            print(f"re-queued {q.retry_jobs()} failed jobs of {q.name!r}")
        else:
            _job(q, args.id).retry()
            print(f"job {args.id} of {q.name!r}: failed -> waiting")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    with _open(args, args.queue) as q:
        _job(q, args.id).remove()
    print(f"removed job {args.id} of {args.queue!r}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    with _open(args, args.queue) as q:
        _job(q, args.id).promote()
    print(f"job {args.id} of {args.queue!r}: delayed -> waiting")
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    state = "waiting" if args.state == "wait" else args.state
    with _open(args, args.queue) as q:
        ids = q.clean(args.grace, state, limit=args.limit)
    _emit(args, [{"id": i} for i in ids],
          f"removed {len(ids)} {state} jobs of {args.queue!r} older than {args.grace:g} s")
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    with _open(args, args.queue, known=False) as q:
        q.pause()
    print(f"queue {args.queue!r} paused: running jobs finish, none starts until"
          f" `localq resume {args.queue}`")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    with _open(args, args.queue, known=False) as q:
        q.resume()
    print(f"queue {args.queue!r} resumed")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from .cli_worker import load_handler, run_worker
    handler = load_handler(args.handler)
    with _open(args, args.queue, known=False) as q:
        return run_worker(q, handler, args)


def _cmd_watch(args: argparse.Namespace) -> int:
    from .cli_watch import run_view
    with _open(args, args.queue, known=False) as q:
        return run_view(q, [args.queue] if args.queue else None, args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo(args)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "queues": _cmd_queues, "stats": _cmd_stats, "jobs": _cmd_jobs, "show": _cmd_show,
    "logs": _cmd_logs, "add": _cmd_add, "retry": _cmd_retry, "remove": _cmd_remove,
    "promote": _cmd_promote, "clean": _cmd_clean, "pause": _cmd_pause, "resume": _cmd_resume,
    "worker": _cmd_worker, "watch": _cmd_watch, "demo": _cmd_demo,
}


def _fail(message: str) -> int:
    print(f"localq: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``localq`` command line and return its exit status.

    :param argv: the arguments (default ``sys.argv[1:]``).
    :returns: 0 on success, 1 on a user error (one ``localq: error:`` line on stderr).
    """
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        if args.command is None:
            return _fail(f"a command is required: one of {', '.join(_COMMANDS)}"
                         " (see `localq --help`)")
        return _COMMANDS[args.command](args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except (_UsageError, LocalqError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("localq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: quiet, as other Unix tools are.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
