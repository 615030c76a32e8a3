"""Starting the Node peers of ``interop/js`` for the Endo interop tests.

The tests need Node and the npm packages pinned in ``interop/js`` (installed
with ``npm ci --prefix interop/js``); without them they are skipped with a
message that says so.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from procs import stop

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "interop" / "js"
NODE = shutil.which("node")

_missing = (
    "node is not on PATH"
    if NODE is None
    else None
    if (JS_DIR / "node_modules" / "@endo" / "captp" / "package.json").exists()
    else "interop/js/node_modules is missing: run `npm ci --prefix interop/js`"
)

requires_node = pytest.mark.skipif(_missing is not None, reason=_missing or "")
"""Skip a test (or module) when Node or the npm packages are missing."""


def read_listening_line(stream: IO[bytes], what: str, timeout: float = 15.0) -> int:
    """The port from the ``listening PORT`` line a peer prints first."""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError(f"{what} did not print 'listening PORT' within {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"{what} exited before printing 'listening PORT': {buf!r}")
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    word, _, port = line.partition(" ")
    if word != "listening" or not port.isdigit():
        raise RuntimeError(f"{what} printed {line!r}, expected 'listening PORT'")
    return int(port)


@dataclass
class NodeServer:
    """A running ``server.mjs``."""

    port: int
    proc: subprocess.Popen[bytes]


@contextmanager
def node_server(*args: str) -> Iterator[NodeServer]:
    """Run ``interop/js/server.mjs`` (full lockdown, ``--expose-gc``) until the block ends."""
    assert NODE is not None
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [NODE, "--expose-gc", "server.mjs", "--port", "0", *args],
            cwd=JS_DIR, stdout=subprocess.PIPE, stderr=log,
        )
        try:
            assert proc.stdout is not None
            yield NodeServer(read_listening_line(proc.stdout, "server.mjs"), proc)
        finally:
            stop(proc, 5)


@contextmanager
def python_peer(*args: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Run ``python -m interop.endo_peer --port 0``; yield its port and process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "interop.endo_peer", "--port", "0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        yield read_listening_line(proc.stdout, "interop.endo_peer"), proc
    finally:
        stop(proc, 5)


def client_command(port: int, script: str, *extra: str) -> list[str]:
    """The command line of ``interop/js/client.mjs`` running ``script`` against ``port``."""
    assert NODE is not None
    return [NODE, "--expose-gc", str(JS_DIR / "client.mjs"), "--port", str(port),
            "--script", script, *extra]


def parse_client_output(stdout: bytes) -> dict[str, dict[str, Any]]:
    """The client's result lines by step name (``done`` holds the final line).

    SES logs every error it sends on stdout ("Temporary logging of sent
    error"); only our JSON lines are read.
    """
    results: dict[str, dict[str, Any]] = {}
    for raw in stdout.decode("utf-8", "replace").split("\n"):
        if raw.startswith('{"step"'):
            line = json.loads(raw)
            results[line["step"]] = line
        elif raw.startswith(('{"done"', '{"fatal"')):
            line = json.loads(raw)
            results["done" if "done" in line else "fatal"] = line
    return results


def failed_steps(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The step lines that did not pass."""
    return [r for name, r in results.items() if name not in ("done",) and not r.get("ok")]
