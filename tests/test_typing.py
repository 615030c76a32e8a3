"""Typed remote calls: mypy --strict accepts the good uses and rejects the bad ones exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "typing_cases"


def mypy(path: Path, tmp_path: Path) -> list[str]:
    stdout, stderr, _ = api.run([
        "--strict", "--no-error-summary", "--show-error-codes", "--no-pretty",
        "--cache-dir", str(tmp_path / "cache"), str(path.relative_to(ROOT)),
    ])
    assert stderr == ""
    return [line for line in stdout.splitlines() if ": error:" in line or ": note:" in line]


@pytest.mark.slow
def test_good_uses_type_check(tmp_path: Path) -> None:
    assert mypy(CASES / "remote_calls_ok.py", tmp_path) == []


@pytest.mark.slow
def test_bad_uses_are_each_rejected_with_the_expected_error(tmp_path: Path) -> None:
    path = CASES / "remote_calls_bad.py"
    expected = {
        (number, match.group(1))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if (match := re.search(r"# E: ([a-z-]+)$", line))
    }
    found = set()
    for line in mypy(path, tmp_path):
        match = re.match(r".*remote_calls_bad\.py:(\d+): error: .*\[([a-z-]+)\]$", line)
        assert match, line
        found.add((int(match.group(1)), match.group(2)))
    assert found == expected
    assert len(expected) == 8


@pytest.mark.slow
def test_the_errors_name_the_mistake(tmp_path: Path) -> None:
    out = "\n".join(mypy(CASES / "remote_calls_bad.py", tmp_path))
    assert '"Store" has no attribute "gett"' in out
    assert 'Missing positional argument "key" in call to "get" of "Store"' in out
    assert 'Too many arguments for "get" of "Store"' in out
    assert '"Counter" has no attribute "decr"' in out
    assert 'expression has type "list[str]", variable has type "int"' in out
