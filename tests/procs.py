"""Run our own peers in other processes for interop tests: each prints its URI first."""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS = Path(__file__).parent


@contextmanager
def spawn(*args: str, timeout: float = 30.0) -> Iterator[str]:
    """Start ``python ARGS``; yield the first line it prints; stop it at the end."""
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, text=True, cwd=TESTS.parent
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().strip() if ready else ""
        if not line:
            raise RuntimeError(f"{args} printed nothing within {timeout} s (exit {proc.poll()})")
        yield line
    finally:
        stop(proc, 10)


def stop(proc: subprocess.Popen[Any], grace: float) -> None:
    """Ask ``proc`` to end; kill it if it has not within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.wait()
