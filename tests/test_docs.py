"""The README is part of the product: its commands, names and examples must stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import localq

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text()


def _code_block_after(heading: str) -> str:
    section = README[README.index(heading):]
    match = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section)
    assert match, f"no python example under {heading!r}"
    return "\n".join(line[4:] for line in match.group(1).splitlines())


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    dollar = [line for line in README.splitlines() if line.startswith("$ ")]
    assert README.splitlines()[:2] == dollar == [
        "$ pip install . && localq demo",
        "$ pip install '.[test]' && python -m pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet '.[test]'" in ci and "\npython -m pytest" in ci


def test_every_public_name_is_documented() -> None:
    missing = [name for name in localq.__all__ if name != "__version__" and name not in README]
    assert missing == []


def test_every_api_method_of_queue_and_job_is_documented() -> None:
    for cls in (localq.Queue, localq.Job, localq.Worker):
        public = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))]
        missing = [n for n in public if n not in README]
        assert missing == [], (cls.__name__, missing)


def test_the_quickstart_runs(tmp_path: Path) -> None:
    code = _code_block_after("Quickstart\n---").replace('"jobs.db"', repr(str(tmp_path / "jobs.db")))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'sent': True}"
