"""The programs the documentation shows run as written and print what the pages say.

Each ``docs/examples/NAME.py`` is included in a page, and so is the output
beside it (``NAME.out``); here each program runs in a fresh interpreter and
its output is compared with that file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
PROGRAMS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.stem)
def test_example_prints_what_the_docs_say(program: Path) -> None:
    result = run(str(program.relative_to(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == program.with_suffix(".out").read_text()


def test_the_testing_example_passes_under_pytest() -> None:
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "docs/examples/test_greeter.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_every_example_is_shown_in_a_page() -> None:
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    for path in EXAMPLES.iterdir():
        if path.suffix in (".py", ".out"):
            assert f'"docs/examples/{path.name}"' in pages, f"{path.name} is in no page"
