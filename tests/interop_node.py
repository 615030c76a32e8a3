"""A node in its own process for the three-node interop tests: serves a Recorder.

``python tests/interop_node.py [NETLAYER]`` prints the Recorder's sturdyref
URI, then serves until killed (on ``tcp-testing-only`` unless another
netlayer is named).  The Recorder remembers every call and can say which
peers its node has sessions with, so a test can see that a handoff made a
direct session rather than a proxy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))

from captp import far
from netlayers.choose import make_netlayer
from ocapn import Node


@far
class Recorder:
    def __init__(self, node: Node) -> None:
        self._node = node
        self.calls: list[list[Any]] = []

    def __call__(self, *args: Any) -> int:
        self.calls.append(list(args))
        return len(self.calls)

    def log(self) -> list[list[Any]]:
        return self.calls

    def peers(self) -> list[str]:
        return sorted(s.peer_location.designator for s in self._node.sessions if s.peer_location)


async def main() -> None:
    netlayer = make_netlayer(sys.argv[1] if len(sys.argv) > 1 else "tcp-testing-only")
    async with Node(netlayer) as node:
        print(node.publish(Recorder(node), b"recorder"), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main)
