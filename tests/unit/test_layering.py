"""Architecture rules checked on the source of every module of the localq package.

* Only the job moves write job rows: on SQLite the modules of ``moves/``, which
  ``transitions.py`` re-exports (the one interface to them); on PostgreSQL
  ``pg/transitions.py``. (``schema.py`` only creates the table.)
* No module imports ``sqlite3`` (it would drop SQLite's POSIX locks on a file apsw has open)
  or ``pickle`` (a queue file must never become code execution).
* SQL takes values through named parameters only: no ``?`` placeholders, no ``%`` or
  ``.format`` on SQL, and f-strings or ``+`` in SQL only for the fixed fragments listed here
  (column lists, ORDER BY clauses, the LIFO position expression, lists of named placeholders,
  PRAGMA statements, which take no parameters).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import localq

PACKAGE = Path(localq.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: f-string / ``+`` pieces allowed inside SQL, per module: fixed fragments, never values.
ALLOWED_FRAGMENTS = {
    # cookie + 1: the int PRAGMA schema_version gave, formatted with :d (a PRAGMA takes no
    # bound parameter).
    "_db.py": {"schema.APPLICATION_ID", "schema.SCHEMA_VERSION", "level", "pragma", "cookie + 1"},
    "limiter.py": {"_group_sql(limit)", "', '.join(marks)", "i"},
    # STATE_IS[...]: fixed "state = '<state>'" strings (transitions.STATE_IS).
    "queries.py": {"JOB_COLUMNS", "order", "STATE_IS[state]", "STATE_IS[sql_state]"},
    "repeats.py": {"transitions.JOB_COLUMNS", "due", "_DUE"},
    # The SQLite job moves (re-exported by transitions.py).
    "moves/rows.py": {"NEXT_ID"},
    "moves/adding.py": {"JOB_COLUMNS", "NEXT_ID"},
    "moves/claiming.py": {"_JOB_COLUMNS_J", "TAIL", "', '.join(marks)", "i", "name_filter"},
    "moves/finishing.py": {"TAIL", "', '.join(marks)", "i", "' OR '.join(rules)", "where",
                           "STATE_IS[state]"},
    "moves/job_admin.py": {"TAIL"},
    "moves/queue_admin.py": {"STATE_IS[CLEAN_STATES[state]]", "unlocked"},
    "moves/occurrences.py": {"JOB_COLUMNS"},
    # The PostgreSQL twins (localq/pg/): the same kind of fixed fragments.
    "pg/limiter.py": {"_group_sql(limit)"},
    "pg/queries.py": {"JOB_COLUMNS", "order", "where", "WATCHED"},
    "pg/bulk.py": {"JOB_COLUMNS", "J_COLUMNS", "WATCHED"},
    "pg/finish.py": {"JOB_COLUMNS"},
    "pg/repeats.py": {"transitions.JOB_COLUMNS"},
    "pg/_sql.py": {"NOTIFY", "', '.join(values)"},
    "pg/transitions.py": {"JOB_COLUMNS", "_J_COLUMNS", "_TAIL", "_NOTIFY", "_WATCHED", "guard",
                          "unlocked", "where"},
}

#: The SQLite modules that write job rows: the moves behind ``transitions.py``.
SQLITE_MOVES = {"moves/adding.py", "moves/claiming.py", "moves/finishing.py",
                "moves/job_admin.py", "moves/queue_admin.py", "moves/occurrences.py"}
#: The modules that write job rows: the transitions of each backend (on PostgreSQL with the
#: multi-row add and the server-side functions split out of pg/transitions.py).
JOB_WRITERS = SQLITE_MOVES | {"pg/transitions.py", "pg/bulk.py", "pg/plpgsql.py"}

_JOB_WRITE = re.compile(r"\b(INSERT\s+(OR\s+\w+\s+)?INTO\s+jobs|UPDATE\s+jobs|DELETE\s+FROM\s+jobs|"
                        r"REPLACE\s+INTO\s+jobs)\b", re.IGNORECASE)
_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|PRAGMA|VALUES|RETURNING|ORDER BY|"
                  r"FROM|AND|OR|IN|SET|LIMIT|CASE|WHEN)\b|^:[a-z]")
_STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|REPLACE)\b|\bFROM\b|\bWHERE\b")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal outside docstrings (f-strings with their holes as ``{}``)."""
    skip = _docstrings(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            out.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}"
                                             for v in node.values)))
    return out


def _without_quoted(sql: str) -> str:
    return re.sub(r"'[^']*'", "''", sql)


@pytest.fixture(params=MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def module(request: pytest.FixtureRequest) -> tuple[str, ast.Module]:
    path: Path = request.param
    return str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8"))


def test_only_transitions_writes_job_rows(module: tuple[str, ast.Module]) -> None:
    name, tree = module
    writes = [(line, text[:60]) for line, text in _strings(tree) if _JOB_WRITE.search(text)]
    if name in JOB_WRITERS:
        assert writes, f"{name} should hold the job writes (did the scan break?)"
    else:
        assert writes == [], (f"{name} writes job rows: make it a move in localq/moves/"
                              " (re-exported by transitions.py) or in pg/transitions.py")


def test_transitions_is_the_interface_to_every_sqlite_move() -> None:
    # The Queue calls the backend's transitions module: a move it did not re-export would be
    # a job write outside the interface the PostgreSQL twin mirrors.
    import importlib

    from localq import transitions
    for name in SQLITE_MOVES:
        module = importlib.import_module("localq." + name[:-3].replace("/", "."))
        missing = set(module.__all__) - set(transitions.__all__)
        assert not missing, f"transitions.py does not re-export {sorted(missing)} of {name}"


def test_no_sqlite3_or_pickle(module: tuple[str, ast.Module]) -> None:
    name, tree = module
    banned = {"sqlite3", "pickle", "cPickle", "_pickle", "shelve", "marshal"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "__import__", "importlib.import_module"):
            names = [a.value for a in node.args if isinstance(a, ast.Constant)]
        else:
            continue
        assert not banned & set(names), f"{name}:{node.lineno} imports {names}"


def test_every_module_starts_with_future_annotations(module: tuple[str, ast.Module]) -> None:
    name, tree = module
    body = tree.body[1:] if tree.body and isinstance(tree.body[0], ast.Expr) else tree.body
    if not body:
        return
    first = body[0]
    assert isinstance(first, ast.ImportFrom) and first.module == "__future__", \
        f"{name}: the first statement must be 'from __future__ import annotations'"


def test_sql_has_no_positional_placeholders(module: tuple[str, ast.Module]) -> None:
    name, tree = module
    for line, text in _strings(tree):
        if _STATEMENT.search(text) and _SQL.search(text):
            assert "?" not in _without_quoted(text), \
                f"{name}:{line} uses '?' in SQL: use named parameters (:name)"


def test_sql_is_never_built_from_values(module: tuple[str, ast.Module]) -> None:
    name, tree = module
    allowed = ALLOWED_FRAGMENTS.get(name, set())
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if _SQL.search(literal):
                for hole in node.values:
                    if isinstance(hole, ast.FormattedValue):
                        expr = ast.unparse(hole.value)
                        assert expr in allowed, (
                            f"{name}:{node.lineno} puts {{{expr}}} into SQL: pass values as"
                            " named parameters")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            operands = [node.left, node.right]
            if any(isinstance(o, ast.Constant) and isinstance(o.value, str) and
                   _SQL.search(o.value) for o in operands):
                for o in operands:
                    if isinstance(o, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
                        expr = ast.unparse(o)
                        assert expr in allowed, f"{name}:{node.lineno} concatenates {expr} into SQL"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
                assert not _STATEMENT.search(node.left.value), f"{name}:{node.lineno} %-formats SQL"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "format" and isinstance(node.func.value, ast.Constant):
            text = node.func.value.value
            assert not (isinstance(text, str) and _STATEMENT.search(text)), \
                f"{name}:{node.lineno} .format()s SQL"


def test_the_allowed_fragments_are_fixed_strings() -> None:
    # The fragments allowed above must stay constants chosen by localq, never user values.
    from localq.listing import LIST_ORDER
    from localq.moves import rows
    for fragment in (rows.JOB_COLUMNS, rows.TAIL, rows.NEXT_ID):
        assert isinstance(fragment, str) and ":" not in fragment.replace(":tail", "")
    assert all(isinstance(order, str) and re.fullmatch(r"[a-z_, ]+", order)
               for _, order in LIST_ORDER.values())
    from localq.pg import transitions as pg_transitions
    for fragment in (pg_transitions.JOB_COLUMNS, pg_transitions._J_COLUMNS,
                     pg_transitions._TAIL, pg_transitions._NOTIFY, pg_transitions._WATCHED):
        assert isinstance(fragment, str)
        assert set(re.findall(r"%\((\w+)\)s", fragment)) <= {"note", "q", "wall"}


def test_the_scan_sees_every_module() -> None:
    names = {str(p.relative_to(PACKAGE)) for p in MODULES}
    assert {"transitions.py", "queue.py", "queries.py", "_db.py", "schema.py"} <= names
    assert SQLITE_MOVES <= names
