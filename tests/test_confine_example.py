"""examples/agent_tools.py runs its whole story: every escape fails, revocation holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from captp.confine import probe

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.interop
@pytest.mark.skipif(
    not all(layer.ok for layer in probe().values()), reason="kernel layers missing"
)
def test_agent_tools_example() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_tools.py")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "GOT IT" not in out
    for line in [
        "read the key from the host: PermissionError",
        "reach the chat service directly: PermissionError",
        "signal the other tool: PermissionError",
        "start a program: PermissionError",
        "find the key in the environment: not there",
        "private method: TypeError: Chat has no method '_client'",
        "summarizer now fails: guest raised Revoked: ",
        "summarizer says: '[mini-remote] Compartments",
        "(add refused: TypeError: attenuated Index does not expose method 'add')",
    ]:
        assert line in out, out
